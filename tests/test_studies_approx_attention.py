"""The approximate-attention study: each search against brute force on tiny inputs, the measures on hand
examples, attention restricted to every key equal to the full model, and the command end to end."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest
import torch
import torch.nn.functional as F
from script_modules import load_script

from lit_gpt.data.tokenizer import train_bpe
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT
from lit_gpt.studies.retrieval.search import (
    ExactTopK,
    Favor,
    KMeansBuckets,
    dense_cost,
    favor_scores,
    kmeans,
    mass_captured,
    nearest,
    orthogonal_gaussian,
    positive_features,
    recall_at_k,
)
from lit_gpt.studies.retrieval.study import (
    LayerRecord,
    StudyError,
    StudySettings,
    key_selection,
    record_problems,
    restricted_loss,
    retrieval,
    sequence_loss,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments/approximate_attention/run.py"


def qkv(batch=2, heads=3, length=9, size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, heads, length, size, generator=generator) for _ in range(2))


def causal(length):
    return torch.ones(length, length, dtype=torch.bool).tril()


def brute_top(scores, visible, top):
    """Per row, the set of the `top` highest visible scores (`visible` broadcasts), by sorting a Python list."""
    chosen = torch.zeros(scores.shape, dtype=torch.bool)
    visible = visible.expand(scores.shape)
    for index in torch.cartesian_prod(*(torch.arange(n) for n in scores.shape[:-1])).tolist():
        row, seen = scores[tuple(index)], visible[tuple(index)]
        keys = sorted((j for j in range(row.shape[0]) if seen[j]), key=lambda j: -row[j])[:top]
        chosen[tuple(index)][keys] = True
    return chosen


# ------------------------------------------------------------------------------------------ exact
@pytest.mark.parametrize("top", [1, 3, 20])
def test_exact_top_k_is_the_brute_force_top_k_of_the_visible_keys(top):
    q, k = qkv()
    selection = ExactTopK().select(0, q, k, causal(9), 0.5, top)
    assert torch.equal(selection.keys, brute_top(q @ k.transpose(-1, -2), causal(9), top))
    assert torch.equal(selection.keys.sum(-1), torch.arange(1, 10).clamp(max=top).expand(2, 3, -1))


def test_costs_follow_the_stated_formulas():
    q, k = qkv(batch=1, heads=1, length=4, size=2)
    visible = causal(4)  # n_i = 1, 2, 3, 4: 10 scores
    assert dense_cost(visible, 1, 1, 2) == 2 * 2 * 10
    assert ExactTopK().select(0, q, k, visible, 1.0, 1).cost == 2 * 10 + 2 * 4  # every score, one value each
    favor = Favor(features=3)
    assert favor.select(0, q, k, visible, 1.0, 2).cost == 3 * 2 * (4 + 4) + 3 * 10 + 2 * 2 * (1 + 2 + 2 + 2)
    buckets = KMeansBuckets(clusters=4, probes=4)  # every bucket visited: all 10 visible keys are candidates
    buckets.fit(0, k[0])
    assert buckets.select(0, q, k, visible, 1.0, 2).cost == 4 * 2 * (4 + 4) + 2 * 10 + 2 * 7


# ------------------------------------------------------------------------------------------ FAVOR+
def test_orthogonal_projections_are_orthogonal_within_a_block_and_gaussian_in_size():
    omega = orthogonal_gaussian(10, 4, torch.Generator().manual_seed(0))
    assert omega.shape == (10, 4)
    for block in (omega[:4], omega[4:8]):
        gram = block @ block.T
        torch.testing.assert_close(gram - torch.diag(gram.diag()), torch.zeros(4, 4, dtype=torch.float64))
    norms = orthogonal_gaussian(4000, 4, torch.Generator().manual_seed(1)).pow(2).sum(-1)
    assert abs(float(norms.mean()) - 4) < 0.2  # |w|^2 ~ chi^2 with D degrees of freedom


def test_positive_features_are_positive_and_their_product_is_unbiased_for_exp_of_the_dot_product():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 5, 4, generator=generator, dtype=torch.float64) * 0.4
    exact = (x * y).sum(-1).exp()
    draws = torch.stack([orthogonal_gaussian(4, 4, generator) for _ in range(4000)])  # (draws, m, D)
    phi_x, phi_y = (positive_features(v[:, None, None], draws)[:, :, 0] for v in (x, y))  # (pairs, draws, m)
    estimates = (phi_x * phi_y).sum(-1)
    assert torch.all(estimates > 0)
    torch.testing.assert_close(estimates.mean(1), exact, rtol=0.05, atol=0)  # unsigned QR directions: 24% off


def test_the_favor_estimate_converges_as_features_grow():
    """The mean relative error shrinks like 1 / sqrt(m): about 4x per 16x features."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 50, 8, generator=generator, dtype=torch.float64) * 0.3
    exact = (x * y).sum(-1).exp()
    errors = []
    for m in (8, 128, 2048):
        omegas = [orthogonal_gaussian(m, 8, generator) for _ in range(5)]
        estimates = [(positive_features(x, omega) * positive_features(y, omega)).sum(-1) for omega in omegas]
        errors.append(sum(float(((e - exact).abs() / exact).mean()) for e in estimates) / 5)
    assert errors[0] > 2.5 * errors[1] > 6 * errors[2] and errors[2] < 0.05


def test_favor_scores_rank_keys_as_the_unstabilised_estimate_does():
    q, k = qkv(size=8)
    q, k = q * 3, k * 3  # large scores, where the stabilisation matters
    favor = Favor(16)
    omega = favor.omega(0, heads=3, size=8)
    stable = favor_scores(q, k, omega, 8**-0.5)
    root = 8**-0.25
    plain = positive_features(q.double() * root, omega) @ positive_features(k.double() * root, omega).transpose(-1, -2)
    ratio = stable / plain  # one positive factor per query
    torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio))
    selection = favor.select(0, q, k, causal(9), 8**-0.5, 3)
    assert torch.equal(selection.keys, brute_top(plain, causal(9), 3))


# ------------------------------------------------------------------------------------------ k-means
def test_kmeans_finds_well_separated_clusters_and_nearest_is_brute_force():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = (centres.repeat_interleave(30, 0) + 0.1 * torch.randn(90, 2, generator=generator))[None]
    found = kmeans(points, 3, 10, generator)[0]
    assert torch.cdist(found, centres).amin(0).max() < 0.1
    x = torch.randn(7, 2, generator=generator)
    assert torch.equal(nearest(x, found), torch.cdist(x, found).argmin(-1))


def fitted_buckets(k, clusters, probes):
    buckets = KMeansBuckets(clusters, probes)
    buckets.fit(0, k.transpose(0, 1).flatten(1, 2))
    return buckets


def test_visiting_every_bucket_is_exact_top_k():
    q, k = qkv(length=12)
    for top in (1, 4):
        exact = ExactTopK().select(0, q, k, causal(12), 0.5, top).keys
        assert torch.equal(fitted_buckets(k, 4, 4).select(0, q, k, causal(12), 0.5, top).keys, exact)


@pytest.mark.parametrize("probes, top", [(1, 1), (1, 5), (2, 3)])
def test_bucket_candidates_are_the_visible_keys_of_the_best_buckets_until_they_suffice(probes, top):
    q, k = qkv(length=10)
    buckets = fitted_buckets(k, 4, probes)
    centroids = buckets.centroids[0]
    found = buckets.candidates(0, q, k, causal(10), top)
    for b, h, i in torch.cartesian_prod(torch.arange(2), torch.arange(3), torch.arange(10)).tolist():
        bucket = [int(torch.cdist(k[b, h, j][None], centroids[h]).argmin()) for j in range(i + 1)]
        order = sorted(range(4), key=lambda c: -float(q[b, h, i] @ centroids[h, c]))
        visited = order[:probes]
        while sum(bucket.count(c) for c in visited) < min(top, i + 1):
            visited = order[: len(visited) + 1]
        expected = [j <= i and bucket[j] in visited for j in range(10)]
        assert found[b, h, i].tolist() == expected
    chosen = buckets.select(0, q, k, causal(10), 0.5, top).keys  # the best exact scores among the candidates
    assert torch.equal(chosen, brute_top(q @ k.transpose(-1, -2), found, top))


def test_a_query_s_buckets_never_depend_on_later_keys():
    q, k = qkv(length=10)
    buckets = fitted_buckets(k, 4, 1)
    changed = k.clone()
    changed[:, :, 6:] = torch.randn(2, 3, 4, 4)
    before = buckets.select(0, q, k, causal(10), 0.5, 3).keys
    after = buckets.select(0, q, changed, causal(10), 0.5, 3).keys
    assert torch.equal(before[:, :, :6, :6], after[:, :, :6, :6])


# ------------------------------------------------------------------------------------------ measures
def test_recall_and_mass_on_a_hand_example():
    true = torch.tensor([[True, True, False, False], [False, True, True, False]])
    retrieved = torch.tensor([[True, False, True, False], [False, True, True, False]])
    rows = torch.tensor([True, True])
    assert recall_at_k(retrieved, true, rows) == pytest.approx((0.5 + 1.0) / 2)
    assert recall_at_k(retrieved, true, torch.tensor([True, False])) == pytest.approx(0.5)
    weights = torch.tensor([[0.4, 0.3, 0.2, 0.1], [1.0, 1.0, 1.0, 1.0]])
    kept = torch.tensor([0.0, 4.0])  # a slot every query keeps counts as captured
    assert mass_captured(retrieved, weights, kept, rows) == pytest.approx((0.6 + 6 / 8) / 2)


# ------------------------------------------------------------------------------ restricted attention
def micro_model(**overrides):
    torch.manual_seed(0)
    return GPT(Config.from_name("micro", **overrides)).eval()


VARIANTS = {
    "softmax": {},
    "sigmoid_no_norm": dict(attn_score="sigmoid", attn_normalize="none"),
    "kv_bias": dict(k_bias=True, v_bias=True),
    "sink_token": dict(sink_tokens=1),
}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_restricting_attention_to_every_key_gives_the_full_model_s_loss(overrides):
    model = micro_model(**overrides)
    tokens = torch.randint(0, 128, (3, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = sequence_loss(model(tokens), tokens, None)
    buckets = fitted_buckets(torch.randn(1, 4, 40, 8), 3, 1)
    buckets.fit(1, torch.randn(4, 40, 8))
    for search in (ExactTopK(), Favor(4), buckets):
        assert restricted_loss(model, tokens, None, search, top=17) == pytest.approx(full, abs=1e-5)
    assert restricted_loss(model, tokens, None, ExactTopK(), top=1) != pytest.approx(full, abs=1e-3)
    assert all(block.attn.key_selector is None for block in model.blocks)


def test_restricted_loss_is_the_loss_of_brute_force_top_k_attention():
    """One layer, softmax: attention over the top-2 keys (and the first) computed by hand from the layer's
    own q, k, v gives the restricted model's logits."""
    model = micro_model(n_layer=1)
    tokens = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(1))
    _, [(spec, problem)] = record_problems(model, tokens)
    scores = problem.q @ problem.k.transpose(-1, -2) * problem.scale
    allowed = brute_top(scores, causal(8), 2)
    allowed[..., 0] = True
    masked = scores.masked_fill(~(allowed & causal(8)), float("-inf"))
    y = (torch.softmax(masked, -1) @ problem.v).transpose(1, 2).reshape(2, 8, -1)
    block = model.blocks[0]
    with torch.no_grad():
        x = model.wte(tokens) + block.attn.proj(y)
        logits = model.head(model.norm(x + block.mlp(block.norm_2(x))))
    assert restricted_loss(model, tokens, None, ExactTopK(), 2, n_first=1) == pytest.approx(
        sequence_loss(logits, tokens, None), abs=1e-5
    )


def test_retrieval_measures_of_the_exact_search_and_the_loss_mask():
    model = micro_model(attn_score="sigmoid", attn_normalize="none")
    tokens = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(2))
    records = [LayerRecord.of(spec, problem) for spec, problem in record_problems(model, tokens)[1]]
    exact = retrieval(records, ExactTopK(), 3, n_first=1)
    assert exact["recall"] == 1.0 and 0 < exact["mass"] < 1 and len(exact["layers"]["mass"]) == 2
    everything = retrieval(records, ExactTopK(), 11, n_first=1)  # only the last query sees more than 11 keys
    assert everything["mass"] < 1 and everything["recall"] == 1
    logits = torch.randn(2, 12, 128)
    mask = torch.arange(11) >= 4
    by_hand = F.cross_entropy(logits[:, 4:-1].flatten(0, 1), tokens[:, 5:].flatten())
    assert sequence_loss(logits, tokens, mask) == pytest.approx(float(by_hand), rel=1e-6)


def test_key_selection_hands_each_layer_its_index_and_spec():
    model = micro_model()
    calls = []
    with key_selection(model, lambda index, spec, problem: calls.append((index, spec.score))):
        model(torch.zeros(1, 4, dtype=torch.long))
    assert calls == [(0, "softmax"), (1, "softmax")]


def test_settings_without_a_meaning_are_refused():
    for settings, match in (
        (StudySettings(k=[0]), "--k"),
        (StudySettings(methods=["lsh"]), "choose from"),
        (StudySettings(probes=[]), "--probes"),
        (StudySettings(n_calibration=100), "calibration"),
        (StudySettings(k=[8, 64]), "below --length"),
        (StudySettings(probes=[9]), "8 buckets"),
    ):
        with pytest.raises(StudyError, match=match):
            settings.check()


# ------------------------------------------------------------------------------------------ command
WORDS = "the a cat dog sat ran on under mat log big small red blue and then".split()


def texts(n, seed):
    generator = torch.Generator().manual_seed(seed)
    return [
        " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (80,), generator=generator)) + "."
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two briefly trained micro runs (softmax, sigmoid without normalisation) and a probe file."""
    root = tmp_path_factory.mktemp("approx")
    tokenizer = train_bpe(texts(30, 0), 300, root / "tokenizer.json")
    stream = torch.tensor([t for ids in tokenizer.encode_batch(texts(40, 1)) for t in ids])
    windows = stream[: len(stream) // 33 * 33].view(-1, 33)
    folders = []
    for name, overrides in (("softmax", {}), ("sigmoid", dict(attn_score="sigmoid", attn_normalize="none"))):
        torch.manual_seed(0)
        model = GPT(Config.from_name("micro", vocab_size=tokenizer.vocab_size, **overrides))
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(10):
            batch = windows[torch.randint(0, len(windows), (8,))]
            loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        folder = root / name
        folder.mkdir()
        torch.save(
            {
                "model": model.state_dict(),
                "config": model.config.asdict(),
                "step_count": 10,
                "train": {"tokenizer": str(tokenizer.path), "fixed_token_pos": 0, "fixed_token_id": 0},
            },
            folder / "iter-000010-ckpt.pth",
        )
        folders.append(folder)
    probe = root / "probe.jsonl"
    probe.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts(8, 2)))
    return folders, probe


def command(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_the_command_writes_tables_json_and_plots(runs, tmp_path):
    folders, probe = runs
    done = command(
        "--runs",
        json.dumps([str(f) for f in folders]),
        "--probe",
        str(probe),
        "--out",
        str(tmp_path),
        "--k",
        "[2, 4]",
        "--features",
        "[4]",
        "--probes",
        "[1]",
        "--clusters",
        "3",
        "--n_sequences",
        "8",
        "--n_calibration",
        "3",
        "--length",
        "32",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "results.json").read_text())
    assert [run["run"] for run in result["runs"]] == ["softmax", "sigmoid"]
    for run in result["runs"]:
        assert run["n_measured"] == 5 and run["n_calibration"] == 3
        assert [(row["method"], row["k"]) for row in run["rows"]] == [
            (m, k) for m in ("exact top-k", "FAVOR+ m=4", "k-means C=3 b=1") for k in (2, 4)
        ]
        exact = run["rows"][0]
        assert exact["recall"] == 1.0 and math.isfinite(exact["perplexity"]) and 0 < exact["compute"] < 1
    table = (tmp_path / "results.md").read_text()
    assert "## All methods at k = 4" in table and "| FAVOR+ m=4 | 2 |" in table
    for name in ("recall_vs_compute", "perplexity_vs_k", "mass_by_layer"):
        assert mpimg.imread(tmp_path / f"{name}.png").shape[0] > 100


def load_command():
    return load_script(SCRIPT, "approximate_attention_run")


@pytest.mark.parametrize(
    "args, match",
    [
        (["--runs", "[nowhere]"], "nowhere is not a checkpoint file or a run folder .* run `make demo` first"),
        (["--k", "[0]"], "--k \\[0\\] must be a non-empty list of integers >= 1"),
        (["--methods", "[exact, lsh]"], "--methods \\['exact', 'lsh'\\]: choose from exact, favor, kmeans"),
    ],
)
@pytest.mark.usefixtures("one_thread")  # restores the thread count the command sets for its process
def test_bad_input_is_one_error_line(args, match, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        load_command().main([*args, "--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert stop.value.code == 1 and error.count("\n") == 1 and error.startswith("error: ")
    assert re.search(match, error), error
    assert not any(tmp_path.iterdir())

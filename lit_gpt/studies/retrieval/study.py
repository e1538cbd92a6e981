"""How well cheap searches find each query's top-k keys in a trained checkpoint, and what attending to
only the keys they find costs in perplexity.

For each run (a run folder's newest checkpoint, or a checkpoint file) the probe windows are read as the
sink evaluation reads them (the run's tokenizer and input transforms, `lit_gpt.measurement.evaluation`). The first
`n_calibration` windows fit what a search learns (k-means centroids per layer and head); the others are
measured:

- retrieval, in the unrestricted model: recall@k of the true top-k (queries that see more than k keys),
  attention mass captured (each variant's own weights: softmax probabilities, or a sigmoid query's
  share of its summed weights; key slots, always kept, count as captured), how often the retrieved keys
  include the first token, and the compute fraction (`search` states the cost model);
- perplexity when, in every layer of our model's forward pass, each query attends only to the keys the
  search retrieves there (through `CausalSelfAttention.key_selector`), with or without the first token
  (and learned sink tokens) always kept.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, cast

import torch
import torch.nn.functional as F

from lit_gpt.core.errors import UserError
from lit_gpt.data.probe import load_probe_windows
from lit_gpt.data.transforms import InputTransforms
from lit_gpt.measurement.evaluation import EvalError, probe_loss_mask, tokenizer_for, train_args
from lit_gpt.measurement.probe_defaults import PROBE_LENGTH, PROBE_SEQUENCES
from lit_gpt.model.attention import AttentionProblem, AttentionSpec, Eager
from lit_gpt.model.gpt import GPT, Block
from lit_gpt.reporting.table import run_checkpoint
from lit_gpt.studies.retrieval.search import (
    ExactTopK,
    Favor,
    KMeansBuckets,
    Search,
    dense_cost,
    mass_captured,
    recall_at_k,
    top_keys,
)
from lit_gpt.training.checkpoint import load_model

METHODS = ("exact", "favor", "kmeans")
DEMO_RUNS = ("checkpoints/softmax_cpu", "checkpoints/sigmoid_no_norm_cpu")


class StudyError(UserError, ValueError):
    """A run, probe or setting the study cannot use; the message names it and the fix."""


@dataclass
class StudySettings:
    """What the study measures."""

    k: list[int] = field(default_factory=lambda: [2, 4, 8, 16])
    """Keys each query attends to."""
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    """Searches: `exact` (the reference), `favor` (FAVOR+ random features), `kmeans` (k-means buckets)."""
    features: list[int] = field(default_factory=lambda: [8, 32, 128])
    """FAVOR+ random-feature counts m."""
    clusters: int = 8
    """k-means buckets per layer and head."""
    probes: list[int] = field(default_factory=lambda: [1, 2, 4])
    """Buckets a query visits at least."""
    n_sequences: int = PROBE_SEQUENCES
    """Probe windows read, calibration windows included."""
    n_calibration: int = 20
    """Leading windows that fit the k-means centroids and are not measured."""
    length: int = PROBE_LENGTH
    """Tokens per probe window."""
    seed: int = 0
    """Seed of the random features and the k-means seeding."""

    def check(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise StudyError(f"--methods {self.methods}: choose from {', '.join(METHODS)}")
        for name in ("k", "features", "probes"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise StudyError(f"--{name} {values} must be a non-empty list of integers >= 1")
        if self.clusters < 1:
            raise StudyError(f"--clusters must be >= 1, got {self.clusters}")
        if max(self.probes) > self.clusters:
            raise StudyError(
                f"--probes {self.probes}: a query cannot visit more than the {self.clusters} buckets (--clusters)"
            )
        if self.length < 2:
            raise StudyError(f"--length must be >= 2 tokens, got {self.length}")
        if max(self.k) >= self.length:
            raise StudyError(
                f"--k {self.k} must stay below --length {self.length}: a query that sees at most k keys "
                f"keeps them all, so no query would be measured"
            )
        if not 1 <= self.n_calibration < self.n_sequences:
            raise StudyError(
                f"--n_calibration {self.n_calibration} must be >= 1 and leave windows to measure "
                f"out of --n_sequences {self.n_sequences}"
            )

    def searches(self) -> list[Search]:
        found: list[Search] = []
        if "exact" in self.methods:
            found.append(ExactTopK())
        if "favor" in self.methods:
            found += [Favor(m, self.seed) for m in self.features]
        if "kmeans" in self.methods:
            shared: dict = {}
            found += [KMeansBuckets(self.clusters, b, seed=self.seed, centroids=shared) for b in self.probes]
        return found


def checkpoint_of(run: str) -> Path:
    """The checkpoint a run stands for, or a `StudyError` saying how to get one."""
    try:
        return run_checkpoint(run)
    except EvalError:
        raise StudyError(
            f"{run} is not a checkpoint file or a run folder with iter-*-ckpt.pth files: run `make demo` "
            f"first (it trains {' and '.join(DEMO_RUNS)}), or pass --runs with run folders or checkpoint "
            f"files"
        ) from None


def check_variant(model: GPT, path: Path) -> None:
    """The study ranks keys by q.k * scale with a positive weight that grows with it; refuse other variants."""
    cfg = model.config
    if cfg.attn_kernel != "none" or cfg.attn_score == "linear" or cfg.pos_embedding in ("alibi", "relative"):
        raise StudyError(
            f"{path} is a {cfg.variant_summary()} model: the study covers dot-product scores without "
            f"an additive position bias and with an increasing positive weight (softmax, sigmoid, elu)"
        )


# ------------------------------------------------------------------------------------ model hooks
Selector = Callable[[int, AttentionSpec, AttentionProblem], Optional[torch.Tensor]]


@contextmanager
def key_selection(model: GPT, select: Selector) -> Iterator[None]:
    """While open, layer i restricts its queries to `select(i, layer spec, problem)` (None: no restriction)."""
    layers = [cast(Block, block).attn for block in model.blocks]
    for index, layer in enumerate(layers):
        layer.key_selector = lambda problem, index=index, spec=layer.spec: select(index, spec, problem)
    try:
        yield
    finally:
        for layer in layers:
            layer.key_selector = None


@torch.no_grad()
def record_problems(
    model: GPT, tokens: torch.Tensor
) -> tuple[torch.Tensor, list[tuple[AttentionSpec, AttentionProblem]]]:
    """The logits of an unrestricted forward pass over `tokens`, and each layer's spec and attention problem in it."""
    seen: list[tuple[AttentionSpec, AttentionProblem]] = []
    with key_selection(model, lambda index, spec, problem: seen.append((spec, problem))):
        logits = model(tokens)
    return logits, seen


def visible_keys(spec: AttentionSpec, problem: AttentionProblem) -> torch.Tensor:
    return spec.mask.matrix(problem.q_pos, problem.k_pos)


def first_keys(problem: AttentionProblem, n_first: int) -> torch.Tensor:
    """(Tk,) boolean: the keys at the first `n_first` positions (learned sink tokens, then the first token)."""
    return problem.k_pos < n_first


# --------------------------------------------------------------------------------------- retrieval
@dataclass
class LayerRecord:
    """What the measures need of one layer: the problem, its visibility, true scores and actual weights."""

    problem: AttentionProblem
    visible: torch.Tensor
    scores: torch.Tensor
    weights: torch.Tensor
    """(B, H, Tq, Tk) weights on the real keys."""
    kept: torch.Tensor
    """(B, H, Tq) weight on the key slots, which every query keeps."""

    @classmethod
    def of(cls, spec: AttentionSpec, problem: AttentionProblem) -> "LayerRecord":
        _, weights = Eager().attend(problem, spec, need_weights=True)
        slots = problem.n_slots
        scores = problem.q @ problem.k.transpose(-1, -2) * problem.scale
        return cls(problem, visible_keys(spec, problem), scores, weights[..., slots:], weights[..., :slots].sum(-1))


def first_mass(records: list[LayerRecord], n_first: int) -> list[float]:
    """Per layer, the mean share of a query's weight on the first keys (queries that see more than them)."""
    shares = []
    for record in records:
        first = first_keys(record.problem, n_first)
        rows = record.visible.sum(-1) > n_first
        share = (record.weights * first).sum(-1) / (record.weights.sum(-1) + record.kept)
        shares.append(float(share[..., rows].mean()))
    return shares


def scaled_norms(records: list[LayerRecord]) -> dict[str, list[float]]:
    """Per layer, the mean |q'|^2 and |k'|^2 of the scaled vectors q' = q sqrt(scale), k' = k sqrt(scale) that
    FAVOR+ maps: the relative variance of one random feature is exp(|q' + k'|^2) - 1."""
    return {
        name: [float(getattr(r.problem, name).pow(2).sum(-1).mean()) * r.problem.scale for r in records]
        for name in ("q", "k")
    }


def retrieval(records: list[LayerRecord], search: Search, top: int, n_first: int) -> dict:
    """Recall@k, mass captured and first-key hits (means over layers, and per layer) and the compute fraction."""
    per_layer: dict[str, list[float]] = {"recall": [], "mass": [], "first_in_top": []}
    cost = dense = 0.0
    for index, record in enumerate(records):
        q, k = record.problem.q, record.problem.k
        chosen = search.select(index, q, k, record.visible, record.problem.scale, top)
        true = top_keys(record.scores, record.visible, top)
        rows = record.visible.sum(-1) > top
        per_layer["recall"].append(recall_at_k(chosen.keys, true, rows))
        per_layer["mass"].append(mass_captured(chosen.keys, record.weights, record.kept, rows))
        hits = (chosen.keys & first_keys(record.problem, n_first)).any(-1).float()
        per_layer["first_in_top"].append(float(hits[..., rows].mean()))
        cost += chosen.cost
        dense += dense_cost(record.visible, q.shape[0], q.shape[1], q.shape[-1])
    result = {name: sum(values) / len(values) for name, values in per_layer.items()}
    return {**result, "compute": cost / dense, "layers": per_layer}


# -------------------------------------------------------------------------------------- perplexity
def sequence_loss(logits: torch.Tensor, tokens: torch.Tensor, loss_mask: Optional[torch.Tensor]) -> float:
    """Mean next-token cross-entropy over the predictions `loss_mask` (T - 1,) counts (all when None)."""
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
    losses = losses.view(tokens.shape[0], -1)
    return float(losses.mean() if loss_mask is None else losses[:, loss_mask].mean())


@torch.no_grad()
def restricted_loss(
    model: GPT, tokens: torch.Tensor, loss_mask: Optional[torch.Tensor], search: Search, top: int, n_first: int = 0
) -> float:
    """The loss when every layer's queries attend only to the keys `search` retrieves there, plus the keys
    at the first `n_first` positions."""

    def select(index: int, spec: AttentionSpec, problem: AttentionProblem) -> torch.Tensor:
        visible = visible_keys(spec, problem)
        keys = search.select(index, problem.q, problem.k, visible, problem.scale, top).keys
        return keys | (first_keys(problem, n_first) & visible)

    with key_selection(model, select):
        return sequence_loss(model(tokens), tokens, loss_mask)


# --------------------------------------------------------------------------------------------- runs
def probe_tokens(model: GPT, ckpt: dict, probe: Path, tokenizer: Optional[str], settings: StudySettings):
    """(probe windows as the run saw its inputs, the loss mask of the run's rule)."""
    cfg, train = model.config, train_args(ckpt)
    if settings.length > cfg.block_size:
        raise StudyError(f"--length {settings.length} exceeds the model's block_size {cfg.block_size}")
    tokens = load_probe_windows(
        probe, tokenizer_for(train, tokenizer), settings.length, settings.n_sequences, cfg.vocab_size
    )
    if tokens.shape[0] <= settings.n_calibration:
        raise StudyError(
            f"{probe} has {tokens.shape[0]} texts, not more than --n_calibration "
            f"{settings.n_calibration}; lower --n_calibration"
        )
    tokens = InputTransforms.of_run(train).apply(tokens, cfg.vocab_size)
    return tokens, probe_loss_mask(cfg, train, settings.length)


@torch.no_grad()
def study_run(
    run: str, probe: Path, tokenizer: Optional[str], settings: StudySettings, say: Callable[[str], None] = print
) -> dict:
    """Every measure of `settings` for one run (see the module docstring)."""
    path = checkpoint_of(run)
    name = (path.parent if Path(run).is_file() else Path(run)).name
    model, ckpt = load_model(path)
    check_variant(model, path)
    tokens, loss_mask = probe_tokens(model, ckpt, probe, tokenizer, settings)
    calibration, tokens = tokens[: settings.n_calibration], tokens[settings.n_calibration :]
    n_first = model.config.sink_tokens + 1
    searches = settings.searches()
    for index, (_, problem) in enumerate(record_problems(model, calibration)[1]):
        keys = problem.k.transpose(0, 1).flatten(1, 2)  # (H, B * T, D)
        for search in searches:
            search.fit(index, keys)
    logits, problems = record_problems(model, tokens)
    records = [LayerRecord.of(spec, problem) for spec, problem in problems]
    dense = sequence_loss(logits, tokens, loss_mask)
    rows = []
    for search in searches:
        for top in settings.k:
            row = {"method": search.label, "k": top, **retrieval(records, search, top, n_first)}
            row["perplexity"] = math.exp(restricted_loss(model, tokens, loss_mask, search, top))
            row["perplexity_first"] = math.exp(restricted_loss(model, tokens, loss_mask, search, top, n_first))
            rows.append(row)
            say(
                f"{name}: {search.label} k={top}: recall {row['recall']:.3f} mass {row['mass']:.3f} "
                f"ppl {row['perplexity']:.2f} / {row['perplexity_first']:.2f} compute {row['compute']:.3f}"
            )
    layer_first_mass = first_mass(records, n_first)
    norms = scaled_norms(records)
    return {
        "run": name,
        "checkpoint": str(path),
        "variant": model.config.variant_summary(),
        "step": ckpt.get("step_count"),
        "n_measured": tokens.shape[0],
        "n_calibration": calibration.shape[0],
        "n_first": n_first,
        "dense_perplexity": math.exp(dense),
        "first_mass": sum(layer_first_mass) / len(layer_first_mass),
        "first_mass_layers": layer_first_mass,
        "query_norm2_layers": norms["q"],
        "key_norm2_layers": norms["k"],
        "rows": rows,
    }


def run_study(
    runs: list[str], probe: Path, tokenizer: Optional[str], settings: StudySettings, say: Callable[[str], None] = print
) -> dict:
    """`study_run` for every run; settings and runs are checked before any model is loaded."""
    settings.check()
    if not runs:
        raise StudyError("--runs is empty; pass run folders or checkpoint files")
    for run in runs:
        checkpoint_of(run)
    return {
        "settings": settings.__dict__,
        "probe": str(probe),
        "runs": [study_run(run, probe, tokenizer, settings, say) for run in runs],
    }


__all__ = [
    "DEMO_RUNS",
    "METHODS",
    "LayerRecord",
    "StudyError",
    "StudySettings",
    "key_selection",
    "record_problems",
    "restricted_loss",
    "retrieval",
    "run_study",
    "sequence_loss",
    "study_run",
]

"""configs/: every YAML composes into a run the trainer accepts, at every scale, and every sweep value of
the paper (docs/reference.md) has a config."""

from pathlib import Path

import pytest

from lit_gpt.model.config import Config
from lit_gpt.reporting.sweeps import fill_results, load_composed, missing_data, preprocess_command
from lit_gpt.training.run_config import CONFIGS, chain, compose, load_run_yaml, scales
from lit_gpt.training.train_args import ArgsError, TrainArgs

RUN_CONFIGS = sorted(path for path in CONFIGS.rglob("*.yaml") if path.parent.name not in ("data", "cpu"))


def rel(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


@pytest.fixture(scope="module")
def composed() -> dict[tuple[str, str], TrainArgs]:
    """Every run config at every scale, through the trainer's parser, `TrainArgs.validate` and `Config`
    validation (parsing is the slow part, so it happens once per module)."""
    return {(rel(path), scale): load_composed(path, scale) for path in RUN_CONFIGS for scale in ("paper", "cpu")}


@pytest.fixture(scope="module")
def paper_runs(composed) -> dict[str, tuple[TrainArgs, Config]]:
    return {name: (args, args.model_config()) for (name, scale), args in composed.items() if scale == "paper"}


# The model each paper-scale preset is replaced by at the cpu scale.
CPU_PRESET = {"tinyllama_60M": "tiny", "tinyllama_1_1b": "tiny", "gpt2_small": "gpt2_tiny"}


def test_every_config_composes_into_a_valid_run_at_every_scale(composed):
    assert len(composed) == 2 * len(RUN_CONFIGS) > 140
    cpu_steps = load_composed(CONFIGS / "cpu" / "base.yaml").max_step
    for (name, scale), args in composed.items():
        assert args.global_batch_size % args.micro_batch_size == 0, name
        if scale == "cpu":
            paper_preset = composed[name, "paper"].model_name
            assert (args.model_name, args.devices, args.max_step) == (CPU_PRESET[paper_preset], "auto", cpu_steps), name
            assert args.model_config().vocab_size == 512, name  # the embedded corpus' tokenizer
            assert set(args.train) == {"train_code", "train_tests", "train_docs"}, name
        else:
            assert args.model_name in CPU_PRESET, name
            assert args.model_config().vocab_size == 50277, name  # the Pile shards' GPT-NeoX tokenizer
            assert all(domain.startswith("train_the_pile_") for domain in args.train), name


def test_data_and_scale_files_load_with_the_trainers_own_reader():
    for path in (CONFIGS / "data").glob("*.yaml"):
        assert load_run_yaml(path)["train"]
    assert scales() == ["paper", "cpu"]


def find(runs, **expected) -> list[str]:
    """Configs whose composed run has every `expected` value (TrainArgs fields or Config fields)."""
    found = []
    for name, (args, config) in runs.items():
        values = {**vars(config), **vars(args)}
        if all(values[key] == value for key, value in expected.items()):
            found.append(name)
    return found


SWEEPS = {
    "lr": [dict(learning_rate=v, min_lr=v) for v in (1e-3, 1e-4, 1e-5)],
    "batch": [dict(global_batch_size=v) for v in (128, 256, 512, 1024)],
    "decay": [dict(weight_decay=v) for v in (0, 1e-3, 1e-2, 0.1, 0.5, 1, 2, 5, 10)],
    "prefix": [dict(prefix_tokens=p, ignore_loss=p - 1) for p in (2, 3, 4, 5, 10)],
    "window": [dict(window_size=w) for w in (32, 64, 128, 256, 512, 1024)],
    "pos": [dict(pos_embedding=p) for p in ("rope", "nope", "absolute", "learnable", "alibi", "relative")],
    "ffn": [dict(mlp=m) for m in ("swiglu", "relu", "gelu", "swish", "reglu", "geglu")],
    "postln": [dict(norm_position="post")],
    "kv_bias": [
        dict(k_bias=k, v_bias=v, head_bias=h)
        for k, v in ((True, False), (True, True), (False, True))
        for h in (False, True)
    ],
    "attnsim": [
        dict(attn_score=s, attn_normalize=n, attn_kernel="none") for s in ("sigmoid", "elu") for n in ("sum", "none")
    ],
    "attnkernel": [
        dict(attn_score="linear", attn_kernel=k, attn_normalize=n)
        for k, norm in (("linear", "max_abs"), ("elu", "sum"), ("mlp", "max_abs"))
        for n in (norm, "none")
    ],
    "data_amount": [dict(downsample_ratio=r) for r in (0.1, 0.5)],
    "random_token": [dict(random_token_start=0, random_token_end=1, fixed_token_pos=None)],
    "fix_token": [dict(fixed_token_pos=p) for p in (0, 1, 2)],
    "1b": [
        dict(model_name="tinyllama_1_1b", attn_score="softmax", max_step=40000),
        dict(model_name="tinyllama_1_1b", attn_score="sigmoid", attn_normalize="none", max_step=40000),
    ],
    "additions": [
        dict(softmax_off_by_one=True),
        dict(sink_logit=True),
        dict(sink_tokens=1),
        dict(attn_gate="headwise"),
        dict(attn_gate="elementwise"),
    ],
    "gpt2": [
        dict(model_name="gpt2_small", sink_tokens=s, k_bias=k, v_bias=k, head_bias=k)
        for s, k in ((0, False), (1, False), (0, True))
    ],
}


@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_every_paper_sweep_value_has_a_config(paper_runs, sweep):
    missing = [expected for expected in SWEEPS[sweep] if not find(paper_runs, **expected)]
    assert not missing, f"no config for {missing}"


def test_sweep_configs_change_only_their_key_from_the_60m_baseline(paper_runs):
    base_args, base_config = paper_runs["tinyllama_60m.yaml"]
    args, config = paper_runs["lr/tinyllama_60m_lr1e-4.yaml"]
    assert args.learning_rate == 1e-4 and config == base_config
    changed = {k: v for k, v in vars(args).items() if v != getattr(base_args, k) and k != "data_yaml_file"}
    assert changed == {"learning_rate": 1e-4, "min_lr": 1e-4}


def test_cpu_scale_sections_scale_batch_and_window_and_replace_the_1b_setup():
    default = load_composed(CONFIGS / "tinyllama_60m.yaml", "cpu").global_batch_size
    batch = load_composed(CONFIGS / "batch" / "tinyllama_60m_batch128.yaml", "cpu")
    assert batch.global_batch_size == default * 128 // 512  # the paper's ratio to its default of 512
    window = load_composed(CONFIGS / "window" / "tinyllama_60m_window1024.yaml", "cpu")
    assert window.model_config().window_size == window.model_config().block_size // 2
    sigmoid_1b = load_composed(CONFIGS / "tinyllama_1b_sigmoid.yaml", "cpu")
    config = sigmoid_1b.model_config()
    assert (config.name, config.attn_score, config.attn_normalize) == ("tiny", "sigmoid", "none")
    assert sigmoid_1b.max_step == load_composed(CONFIGS / "tinyllama_60m.yaml", "cpu").max_step


def test_a_setup_names_its_own_model_at_the_cpu_scale_and_its_variants_follow(composed):
    for name in ("gpt2/gpt2_small.yaml", "gpt2/gpt2_small_sink_token.yaml", "gpt2/gpt2_small_kv_bias.yaml"):
        paper, cpu = composed[name, "paper"].model_config(), composed[name, "cpu"].model_config()
        assert (paper.name, cpu.name, cpu.block_size) == ("gpt2_small", "gpt2_tiny", 64)
        assert paper.variant_summary() == cpu.variant_summary()
    default, sink = (composed[f"gpt2/gpt2_small{suffix}.yaml", "cpu"] for suffix in ("", "_sink_token"))
    assert vars(sink) == {
        **vars(default),
        "model": {**default.model, "sink_tokens": 1},
        "data_yaml_file": sink.data_yaml_file,
    }


def test_cpu_scale_puts_the_tokenizers_eos_first_except_where_a_sweep_moves_or_replaces_it():
    assert load_composed(CONFIGS / "tinyllama_60m.yaml", "cpu").fixed_token_pos == 0
    assert load_composed(CONFIGS / "tinyllama_60m.yaml", "paper").fixed_token_pos is None
    fixed = load_composed(CONFIGS / "fix_token" / "tinyllama_60m_fix_position2.yaml", "cpu")
    assert (fixed.fixed_token_pos, fixed.fixed_token_id) == (2, 0)
    assert load_composed(CONFIGS / "random_token" / "tinyllama_60m_random0_1.yaml", "cpu").fixed_token_pos is None


def test_chain_order_scale_sections_and_errors(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "base.yaml").write_text("model_name: micro\nmax_step: 7\nlearning_rate: 0.01\n")
    (tmp_path / "root.yaml").write_text("model_name: tinyllama_60M\nmax_step: 100\nlearning_rate: 0.001\n")
    (tmp_path / "sweep.yaml").write_text(
        "base: root.yaml\nlearning_rate: 0.5\nattn_score: sigmoid\ncpu:\n  global_batch_size: 8\n"
    )
    assert chain(tmp_path / "sweep.yaml") == [tmp_path / "root.yaml", tmp_path / "sweep.yaml"]
    assert compose(tmp_path / "sweep.yaml", "paper", tmp_path) == {
        "model_name": "tinyllama_60M",
        "max_step": 100,
        "learning_rate": 0.5,
        "model": {"attn_score": "sigmoid"},
    }
    assert compose(tmp_path / "sweep.yaml", "cpu", tmp_path) == {
        "model_name": "micro",
        "max_step": 7,
        "learning_rate": 0.5,
        "global_batch_size": 8,
        "model": {"attn_score": "sigmoid"},
    }
    (tmp_path / "other_setup.yaml").write_text(
        "base: root.yaml\nmodel_name: gpt2_small\ncpu:\n  model_name: gpt2_tiny\n"
    )
    (tmp_path / "other_sweep.yaml").write_text("base: other_setup.yaml\nsink_tokens: 1\n")
    assert compose(tmp_path / "other_sweep.yaml", "cpu", tmp_path) == {  # a setup's section outranks the scale's base
        "model_name": "gpt2_tiny",
        "max_step": 7,
        "learning_rate": 0.01,
        "model": {"sink_tokens": 1},
    }
    with pytest.raises(ArgsError, match="unknown scale 'gpu'"):
        compose(tmp_path / "sweep.yaml", "gpu", tmp_path)
    (tmp_path / "typo.yaml").write_text("base: root.yaml\nlearnig_rate: 0.1\n")
    with pytest.raises(ArgsError, match="unknown key.*learnig_rate"):
        compose(tmp_path / "typo.yaml", "paper", tmp_path)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ArgsError, match="its own base"):
        chain(tmp_path / "loop.yaml")


def test_missing_data_names_the_preprocess_command_with_the_models_vocabulary(tmp_path):
    assert preprocess_command("cpu") == "bash preprocess/run_preprocess.sh --source embedded --vocab_size 512"
    assert preprocess_command("paper") == "bash preprocess/run_preprocess.sh"
    assert "--output_dir" in preprocess_command("cpu", tmp_path)
    assert "no training shards" in missing_data(tmp_path, None)
    (tmp_path / "train_code").mkdir()
    (tmp_path / "meta.json").write_text('{"tokenizer": {"vocab_size": 8192}}')
    assert "8192-entry tokenizer" in missing_data(tmp_path, None, vocab_size=512)
    assert missing_data(tmp_path, None, vocab_size=8192) is None
    assert "no probe set" in missing_data(tmp_path, tmp_path / "probe.jsonl")


def test_fill_results_replaces_only_its_block(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# T\n<!-- results: lr cpu -->\nold\n<!-- /results -->\n<!-- results: lr paper -->\nkeep\n<!-- /results -->\n"
    )
    assert fill_results(doc, "lr cpu", "| a |\n|---|\n| 1 |\n")
    assert doc.read_text() == (
        "# T\n<!-- results: lr cpu -->\n| a |\n|---|\n| 1 |\n<!-- /results -->\n"
        "<!-- results: lr paper -->\nkeep\n<!-- /results -->\n"
    )
    assert not fill_results(doc, "batch cpu", "x")


def test_every_sweep_doc_has_a_results_block_per_scale_for_its_scripts():
    for script in sorted(Path(CONFIGS.parent, "scripts").rglob("run_*.sh")):
        text = script.read_text()
        if "RESULTS_DOC=" not in text:
            continue
        doc = CONFIGS.parent / text.split("RESULTS_DOC=")[1].split()[0]
        sweeps = {line.split()[2] for line in text.splitlines() if line.strip().startswith("run_experiment")}
        for sweep in sweeps:
            for scale in ("paper", "cpu"):
                assert f"<!-- results: {sweep} {scale} -->" in doc.read_text(), (script, sweep, scale)


def test_trainer_loads_a_layered_config_directly():
    """`pretrain/tinyllama.py --config configs/<family>/<x>.yaml` composes the bases (paper scale)."""
    from lit_gpt.training.run_config import parse_args

    args = parse_args(["--config", "configs/lr/tinyllama_60m_lr1e-3.yaml", "--logger", "none"], exit_on_error=False)
    assert args.learning_rate == 1e-3
    assert args.model_name == "tinyllama_60M" and args.global_batch_size == 512


def test_filling_a_doc_that_is_missing_or_not_text_is_one_clear_error(tmp_path):
    from lit_gpt.core.files import OutputError

    with pytest.raises(OutputError, match=r"--doc .*missing.md cannot be read as UTF-8 text"):
        fill_results(tmp_path / "missing.md", "lr cpu", "| a |")
    (tmp_path / "latin.md").write_bytes(b"caf\xe9")
    with pytest.raises(OutputError, match="cannot be read as UTF-8 text"):
        fill_results(tmp_path / "latin.md", "lr cpu", "| a |")

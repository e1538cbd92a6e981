import pytest
from variants import micro

from lit_gpt.model.attention import AttentionRuntime
from lit_gpt.model.config import CHOICES, GPT2_STRUCTURE, PRESETS, RUNTIME_KEYS, Config, ConfigError
from lit_gpt.model.variants import VARIANTS
from lit_gpt.training.run_config import parse_args


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_round_trips(name):
    config = Config.from_name(name)
    assert Config.from_dict(config.asdict()) == config


def test_paper_60m_shape():
    config = Config.from_name("tinyllama_60M")
    assert (config.head_size, config.n_query_groups, config.padded_vocab_size) == (96, 8, 50432)


def test_gpt2_presets_share_the_gpt2_structure_at_the_gpt2_and_tiny_sizes():
    small, tiny = Config.from_name("gpt2_small"), Config.from_name("gpt2_tiny")
    for config in (small, tiny):
        assert {key: getattr(config, key) for key in GPT2_STRUCTURE} == GPT2_STRUCTURE
        assert config.variant_summary() == "softmax norm:sum pos:learnable mlp:gelu_tanh layernorm bias tied"
    shape = (small.n_layer, small.n_head, small.n_embd, small.intermediate_size, small.block_size)
    assert shape == (12, 12, 768, 3072, 1024)
    assert (small.vocab_size, small.padded_vocab_size, small.norm_eps) == (50257, 50304, 1e-5)
    same_size = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "padded_vocab_size")
    assert [getattr(tiny, k) for k in same_size] == [getattr(Config.from_name("tiny"), k) for k in same_size]
    assert tiny.intermediate_size == 4 * tiny.n_embd
    assert micro().variant_summary() == "softmax norm:sum"


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_test_variant_is_a_valid_config(overrides):
    assert micro(**overrides).variant_summary()


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown model preset 'nano'.*micro.*tiny"):
        Config.from_name("nano")


def test_unknown_field_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown config field.*windw_size.*valid fields:.*window_size"):
        Config.from_name("micro", windw_size=4)


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_unknown_choice_lists_the_allowed_values(key):
    with pytest.raises(ConfigError, match=f"{key}='bogus' is not one of {CHOICES[key][0]}, {CHOICES[key][1]}"):
        micro(**{key: "bogus"})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(attn_kernel="elu"), "set attn_score=linear"),
        (dict(attn_normalize="none"), "use attn_normalize=sum"),
        (
            dict(attn_score="sigmoid", attn_normalize="none", k_bias=True),
            "k_bias without v_bias adds a zero-value slot",
        ),
        (dict(attn_score="sigmoid", attn_normalize="max_abs", sink_logit=True), "sink_logit adds a zero-value slot"),
        (dict(attn_score="sigmoid", softmax_off_by_one=True), "softmax_off_by_one needs attn_score=softmax"),
        (dict(head_bias=True), "enable k_bias and/or v_bias"),
        (dict(n_query_groups=3), "n_head=4 must be a multiple of n_query_groups=3"),
        (dict(n_query_groups=0), "n_query_groups must be a positive number, got 0"),
        (dict(n_embd=30), "not divisible by n_head"),
        (dict(head_size=7), "rope needs an even head_size"),
        (dict(window_size=-1), "window_size must be >= 0"),
        (dict(padded_vocab_size=64), "smaller than vocab_size"),
    ],
)
def test_invalid_combinations_say_how_to_fix_them(overrides, message):
    with pytest.raises(ConfigError, match=message):
        micro(**overrides)


def test_attention_only_models_are_a_choice_that_shows_in_the_summary():
    config = micro(mlp="none")
    assert config.variant_summary() == "softmax norm:sum mlp:none"
    assert Config.from_dict(config.asdict()) == config


def test_replace_recomputes_derived_fields():
    config = micro()
    narrower = config.replace(n_head=2)
    assert (narrower.head_size, narrower.n_query_groups) == (16, 2)
    assert config.replace(vocab_size=200).padded_vocab_size == 256
    gqa = micro(n_query_groups=2, head_size=16)
    assert gqa.replace(n_layer=3).asdict() == {**gqa.asdict(), "n_layer": 3}
    assert gqa.replace(n_embd=64).head_size == 16  # an explicit head_size is kept


def test_from_name_keeps_the_preset_name_and_upstream_aliases_resolve():
    assert micro(n_layer=1).name == "micro"
    assert Config.from_name("tiny_LLaMA_60M").n_embd == Config.from_name("tinyllama_60M").n_embd


@pytest.mark.parametrize(
    "field",
    [
        "vocab_size",
        "block_size",
        "n_layer",
        "n_head",
        "n_embd",
        "head_size",
        "n_query_groups",
        "intermediate_size",
        "padding_multiple",
        "norm_eps",
        "rope_base",
    ],
)
@pytest.mark.parametrize("value", [0, -5])
def test_non_positive_sizes_are_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"^{field} must be a positive number, got {value}$"):
        Config.from_name("micro", **{field: value})


def test_negative_optional_sizes_are_refused():
    with pytest.raises(ConfigError, match="kernel_hidden must be >= 0"):
        Config.from_name("micro", kernel_hidden=-1)


# ------------------------------------------------------------------- run-time settings (AttentionRuntime)
def test_the_attention_backend_is_not_part_of_the_saved_config_and_old_checkpoints_still_load():
    config = micro(window_size=4)
    assert not set(RUNTIME_KEYS) & set(config.asdict())
    saved_before = {**config.asdict(), "attn_backend": "flash", "attn_chunk_size": 64}
    assert Config.from_saved(saved_before) == config
    with pytest.raises(ConfigError, match="attn_backend is a run-time setting"):
        Config.from_name("micro", attn_backend="eager")


@pytest.mark.parametrize(
    "yaml_text",
    ["attn_backend: eager\nattn_chunk_size: 8\n", "model: {attn_backend: eager, attn_chunk_size: 8, window_size: 4}\n"],
)
def test_the_former_model_spelling_still_sets_the_run_time_settings(tmp_path, yaml_text):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml_text)
    from_yaml = parse_args(["--model_name", "micro", "--config", str(run_yaml)], exit_on_error=False)
    from_flags = parse_args(
        ["--model_name", "micro", "--model.attn_backend", "eager", "--model.attn_chunk_size=8"], exit_on_error=False
    )
    for args in (from_yaml, from_flags):
        assert args.attention_runtime() == AttentionRuntime("eager", 8)
        assert not set(RUNTIME_KEYS) & set(args.model)
    with pytest.raises(ConfigError, match="attn_backend='fast' is not one of auto"):
        parse_args(["--model_name", "micro", "--model.attn_backend", "fast"], exit_on_error=False)

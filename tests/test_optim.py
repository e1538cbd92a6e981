import math

import pytest

from lit_gpt.model.config import GPT2_STRUCTURE, Config
from lit_gpt.model.gpt import GPT
from lit_gpt.training.optim import learning_rate_at, make_optimizer, param_groups


def test_schedule_warms_up_linearly_then_follows_cosine_to_min_lr():
    kwargs = dict(learning_rate=1e-3, min_lr=1e-4, warmup_steps=10, max_step=110)
    lrs = [learning_rate_at(step, **kwargs) for step in range(120)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert lrs[60] == pytest.approx(1e-4 + 0.5 * 0.9e-3)  # half way through the cosine
    assert all(a >= b for a, b in zip(lrs[10:110], lrs[11:110]))
    assert lrs[110:] == [pytest.approx(1e-4)] * 10


def test_min_lr_equal_to_lr_is_constant_after_warmup_as_in_the_paper_yaml():
    lrs = [learning_rate_at(s, 4e-4, 4e-4, 100, 20000) for s in range(100, 20000, 997)]
    assert lrs == [pytest.approx(4e-4)] * len(lrs)


def test_decay_lr_false_is_constant_from_the_first_step():
    assert {learning_rate_at(s, 3e-3, 0.0, 5, 50, decay_lr=False) for s in range(60)} == {3e-3}


def test_cooldown_holds_the_rate_then_decays_linearly_to_min_lr_over_the_last_steps():
    kwargs = dict(learning_rate=6e-3, min_lr=0.0, warmup_steps=50, max_step=700, cooldown_steps=140)
    lrs = [learning_rate_at(step, **kwargs) for step in range(710)]
    assert lrs[49] == pytest.approx(6e-3)
    assert lrs[50:561] == [pytest.approx(6e-3)] * 511  # stable until the cooldown's first step
    assert lrs[630] == pytest.approx(3e-3)  # half way through the cooldown
    assert all(a > b for a, b in zip(lrs[560:700], lrs[561:701]))
    assert lrs[699] > 0 and lrs[700:] == [0.0] * 10  # every step of the run still moves the weights


def test_a_cooldown_longer_than_the_run_starts_right_after_warmup():
    lrs = [learning_rate_at(s, 1e-3, 1e-4, 5, 25, cooldown_steps=140) for s in range(26)]
    assert lrs[4] == pytest.approx(1e-3) and lrs[5] == pytest.approx(1e-3)
    assert lrs[15] == pytest.approx(1e-3 - 0.9e-3 * 10 / 20)
    assert lrs[25] == pytest.approx(1e-4)


def test_decay_lr_false_ignores_the_cooldown():
    assert {learning_rate_at(s, 3e-3, 0.0, 5, 50, decay_lr=False, cooldown_steps=10) for s in range(60)} == {3e-3}


def test_default_decays_every_parameter_like_upstream():
    model = GPT(Config.from_name("micro", k_bias=True, v_bias=True))
    groups = param_groups(model, 0.1)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.1
    assert sum(p.numel() for p in groups[0]["params"]) == sum(p.numel() for p in model.parameters())


def test_opt_out_exempts_norms_and_key_value_slots_but_not_matrices_or_embeddings():
    model = GPT(Config.from_name("micro", k_bias=True, v_bias=True, head_bias=True))
    decay, no_decay = param_groups(model, 0.1, decay_norms_and_biases=False)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = sorted(names[i] for i in ids(no_decay))
    assert "blocks.0.attn.slots.k_star" in exempt and "blocks.0.attn.slots.v_star" in exempt
    assert "norm.weight" in exempt and "blocks.1.norm_2.weight" in exempt
    decayed = {names[i] for i in ids(decay)}
    assert {"wte.weight", "lm_head.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.down_proj.weight"} <= decayed
    assert len(exempt) + len(decayed) == len(names)


def test_gpt2_biases_and_layernorms_are_exempt_and_the_tied_embedding_is_decayed_once():
    model = GPT(Config.from_name("micro", **GPT2_STRUCTURE))
    decay, no_decay = param_groups(model, 0.1, decay_norms_and_biases=False)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, exempt = ({names[id(p)] for p in group["params"]} for group in (decay, no_decay))
    matrices = ("attn.qkv", "attn.proj", "mlp.up_proj", "mlp.down_proj")
    assert decayed == {"wte.weight", "wpe.weight"} | {f"blocks.{i}.{m}.weight" for i in range(2) for m in matrices}
    assert {"blocks.0.attn.qkv.bias", "blocks.0.mlp.down_proj.bias", "blocks.1.norm_2.bias", "norm.bias"} <= exempt
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_optimizer_uses_the_decay_split_and_betas():
    model = GPT(Config.from_name("micro"))
    opt = make_optimizer(model, 3e-3, 0.1, (0.9, 0.95), decay_norms_and_biases=False)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)
    assert not opt.param_groups[0]["fused"]
    assert math.isclose(opt.param_groups[0]["lr"], 3e-3)

"""The prefix-LM loss rule holds in every place a loss is computed: training, validation, the probe loss the
trainer logs, and the evaluation of a saved run."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F

import lit_gpt.training.trainer as trainer
from lit_gpt.measurement.evaluation import probe_loss_mask
from lit_gpt.measurement.loss import ignored_predictions, lm_loss, prediction_mask, split_batch
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT
from lit_gpt.training.run_config import parse_args
from lit_gpt.training.train_args import ArgsError


def test_prefix_lm_always_ignores_its_first_p_minus_1_predictions():
    prefix = Config.from_name("micro", prefix_tokens=4)
    assert ignored_predictions(prefix) == 3
    assert ignored_predictions(prefix, ignore_loss=1) == 3
    assert ignored_predictions(prefix, ignore_loss=5) == 5
    assert ignored_predictions(Config.from_name("micro"), 0) == 0
    assert ignored_predictions(Config.from_name("micro", prefix_tokens=1)) == 0
    assert prediction_mask(3, 8).tolist() == [False] * 3 + [True] * 4
    assert prediction_mask(0, 8) is None
    assert probe_loss_mask(prefix, {"ignore_loss": 0}, 8).tolist() == prediction_mask(3, 8).tolist()


def test_split_batch_masks_exactly_the_ignored_targets():
    batch = torch.arange(20).view(2, 10)
    inputs, targets = split_batch(batch, 3)
    assert torch.equal(inputs, batch[:, :-1])
    assert (targets[:, :3] == -100).all() and torch.equal(targets[:, 3:], batch[:, 4:])
    logits = torch.randn(2, 9, 32)
    expected = F.cross_entropy(logits[:, 3:].flatten(0, 1), (batch[:, 4:] % 32).flatten())
    assert lm_loss(logits, split_batch(batch % 32, 3)[1]) == pytest.approx(float(expected), rel=1e-6)


def test_trainer_losses_follow_the_model_rule_without_ignore_loss():
    """prefix_tokens=4 and no --ignore_loss: the training step, validation and the probe loss all skip
    the first three predictions."""
    torch.manual_seed(0)
    config = Config.from_name("micro", prefix_tokens=4)
    model = GPT(config).eval()
    batch = torch.randint(0, config.vocab_size, (4, config.block_size + 1))
    with torch.no_grad():
        logits = model(batch[:, :-1])
    expected = F.cross_entropy(logits[:, 3:].flatten(0, 1), batch[:, 4:].flatten())

    fabric = L.Fabric(accelerator="cpu", devices=1)
    metrics = trainer.validate(fabric, model, {"d": [batch]}, eval_iters=1, n_ignored=ignored_predictions(config))
    assert metrics["metric/d_val_loss"] == pytest.approx(float(expected), rel=1e-5)

    probe = batch[:, :-1]
    with torch.no_grad():
        probe_logits = model(probe)
    probe_expected = F.cross_entropy(probe_logits[:, 3:-1].flatten(0, 1), probe[:, 4:].flatten())
    sink = trainer.sink_metrics(
        trainer.sink_evaluation(fabric, model, probe, 0.3, 2, batch_size=4, n_ignored=ignored_predictions(config))
    )
    assert sink["metric/probe_loss"] == pytest.approx(float(probe_expected), rel=1e-5)


def test_ignore_loss_that_leaves_no_prediction_is_refused_counting_the_prefix():
    with pytest.raises(ArgsError, match=r"\(a prefix LM ignores at least 64\)"):
        parse_args(["--model_name", "micro", "--model.prefix_tokens", "65"], exit_on_error=False)
    assert parse_args(["--model_name", "micro", "--model.prefix_tokens", "64"], exit_on_error=False).ignore_loss == 0

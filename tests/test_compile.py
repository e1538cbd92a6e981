"""torch.compile (the trainer's `--compile`): the attention layer traces as one graph, with the backend
chosen before tracing, and a compiled model computes the same loss and gradients as the eager one."""

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from variants import micro, tokens

from lit_gpt.model.attention import AttentionRuntime
from lit_gpt.model.gpt import GPT
from lit_gpt.model.variants import VARIANTS

# One of each path: fused SDPA (with and without key slots or masks) and the eager chunked kernel.
TRACED = ["softmax", "sigmoid", "kernel_elu_sum", "kv_bias", "window", "sink_logit", "sink_tokens", "gate_headwise"]


def loss_of(model, idx):
    return F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())


@pytest.mark.parametrize("name", TRACED)
@pytest.mark.parametrize("backend", ["auto", "eager"])
def test_the_model_traces_without_graph_breaks(name, backend):
    torch._dynamo.reset()
    model = GPT(micro(**VARIANTS[name]), AttentionRuntime(backend, chunk_size=16))
    explained = torch._dynamo.explain(model)(tokens(length=48))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, runtime", [("softmax", AttentionRuntime("sdpa")), ("sigmoid", AttentionRuntime("eager", chunk_size=16))]
)
def test_compiled_and_eager_give_the_same_loss_and_gradients(name, runtime):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = GPT(micro(**VARIANTS[name]), runtime)
    idx = tokens(length=64)
    eager_loss = loss_of(model, idx)
    eager_loss.backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled_loss = loss_of(torch.compile(model), idx)
    compiled_loss.backward()
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
    for compiled_grad, eager_grad in zip((p.grad for p in model.parameters()), eager_grads):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_compiled_training_run_logs_the_losses_of_an_eager_one(tmp_path):
    from test_trainer import build_corpus, cli_args, metric_series

    from lit_gpt.training.run_config import parse_args
    from lit_gpt.training.trainer import setup

    corpus = build_corpus(tmp_path / "corpus")
    common = ("--max_step", "4", "--eval_step_interval", "2", "--save_step_interval", "4")
    for mode in ("eager", "compiled"):
        setup(parse_args(cli_args(corpus, tmp_path / mode, *common, "--compile", str(mode == "compiled"))))
    for metric in ("metric/train_loss", "metric/alpha_val_loss", "metric/probe_loss"):
        eager = metric_series(tmp_path / "eager" / "run" / "metrics.csv", metric)
        compiled = metric_series(tmp_path / "compiled" / "run" / "metrics.csv", metric)
        assert eager.keys() == compiled.keys()
        for step in eager:
            assert compiled[step] == pytest.approx(eager[step], rel=1e-4), (metric, step)

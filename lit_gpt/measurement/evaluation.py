"""Sink evaluation of a training checkpoint: load it, build the probe as the run saw its inputs, report.

The model config and the run's input transforms (a fixed token at position p, random tokens in a
position range) come from the checkpoint, so no model name or mode has to be passed or guessed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch

from lit_gpt.core.errors import UserError
from lit_gpt.core.files import write_json
from lit_gpt.data.tokenizer import TokenizerError, load_tokenizer
from lit_gpt.data.transforms import InputTransforms
from lit_gpt.measurement.analysis import evaluate_gpt
from lit_gpt.measurement.loss import ignored_predictions, prediction_mask
from lit_gpt.measurement.metrics import LAYER_SERIES, hidden_state_label
from lit_gpt.measurement.plots import write_plots
from lit_gpt.measurement.probe_defaults import SINK_EPS, SINK_K
from lit_gpt.measurement.probe_result import ProbeResult
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT


class EvalError(UserError, ValueError):
    """The checkpoint, probe or tokenizer cannot be used; the message names the fix."""


# ------------------------------------------------------------------------------------- checkpoints
def train_args(ckpt: dict) -> dict[str, Any]:
    return ckpt.get("train") or {}


# ------------------------------------------------------------------------------------------ probe
def tokenizer_for(train: dict[str, Any], override: Optional[str] = None):
    """The run's tokenizer: `override`, else the one named in the training args, else the one saved
    next to the run's shards (`train_data_dir/tokenizer.json`)."""
    if override:
        return load_tokenizer(override)
    spec = train.get("tokenizer") or train.get("train_data_dir") or train.get("data_dir")
    if spec:
        try:
            return load_tokenizer(spec)
        except TokenizerError as error:
            raise EvalError(
                f"the run's tokenizer {spec} (recorded in the checkpoint) cannot be loaded ({error}); "
                "pass --tokenizer PATH"
            ) from None
    raise EvalError("the checkpoint names no tokenizer or data dir; pass --tokenizer PATH (tokenizer.json or .model)")


def probe_loss_mask(config: Config, train: dict[str, Any], length: int) -> Optional[torch.Tensor]:
    """Next-token predictions counted in the probe loss, by the training rule (`lit_gpt.measurement.loss`)."""
    return prediction_mask(ignored_predictions(config, train.get("ignore_loss") or 0), length)


# --------------------------------------------------------------------------------------- evaluate
def evaluate_run(
    model: GPT, ckpt: dict, tokens: torch.Tensor, eps: float = SINK_EPS, k: int = SINK_K, batch_size: int = 20
) -> ProbeResult:
    """Sink report of a loaded checkpoint on raw probe tokens (N, T); transforms are applied here."""
    cfg = model.config
    train = train_args(ckpt)
    transforms = InputTransforms.of_run(train)
    tokens = transforms.apply(tokens, cfg.vocab_size)
    result = evaluate_gpt(model, tokens, eps, k, batch_size, probe_loss_mask(cfg, train, tokens.shape[1]))
    result.about.update(
        variant=cfg.variant_summary(),
        config=cfg.asdict(),
        iter_num=ckpt.get("iter_num"),
        step_count=ckpt.get("step_count"),
        tokens_seen=ckpt.get("tokens_seen"),
        input_transforms={**transforms.asdict(), "ignore_loss": train.get("ignore_loss")},
    )
    return result


@torch.no_grad()
def example_maps(model: GPT, ckpt: dict, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Attention maps of the first probe sequence (transforms applied), for heatmaps."""
    first = InputTransforms.of_run(train_args(ckpt)).apply(tokens[:1], model.config.vocab_size)
    return model(first, return_attention=True)[1]


def check_eps(eps: float) -> None:
    if not 0 < eps < 1:
        raise EvalError(f"--eps must be in (0, 1) (a share of attention), got {eps}")


def check_report_options(eps: float, positions: int, n_sequences: int, length: int, batch_size: int) -> None:
    """Refuse evaluation settings without a meaning before a model is loaded."""
    check_eps(eps)
    for name, value in (("positions", positions), ("n_sequences", n_sequences), ("batch_size", batch_size)):
        if value < 1:
            raise EvalError(f"--{name} must be >= 1, got {value}")
    if length < 2:
        raise EvalError(f"--length must be >= 2 tokens, got {length}")
    if positions > length:
        raise EvalError(f"--positions {positions} exceeds the {length}-token probe windows (--length)")


def check_plot_selection(maps: list[torch.Tensor], layers: Optional[list[int]], heads: Optional[list[int]]) -> None:
    """Heatmap layers and heads must exist (and the lists, when given, must not be empty)."""
    for name, chosen, count in (("layers", layers, len(maps)), ("heads", heads, maps[0].shape[1])):
        if chosen is not None and (not chosen or any(not 0 <= index < count for index in chosen)):
            raise EvalError(f"--{name} {chosen} must pick from 0..{count - 1}")


def publish(
    result: ProbeResult,
    maps: Callable[[], list[torch.Tensor]],
    json: Optional[Path] = None,
    plots: Optional[Path] = None,
    layers: Optional[list[int]] = None,
    heads: Optional[list[int]] = None,
    n_slots: int = 0,
) -> None:
    """Print a sink report's table and write its JSON and PNG figures where asked; `maps` computes the
    example attention maps only when plots are wanted (shared by the evaluation commands). The plot
    selection is checked before anything is written, so a refused one leaves no partial output."""
    examples = None
    if plots is not None:
        examples = maps()
        check_plot_selection(examples, layers, heads)
    print(format_table(result))
    if json is not None:
        write_json(json, result.to_json())
        print(f"wrote {json}")
    if examples is not None and plots is not None:
        paths = write_plots(result, examples, plots, layers, heads, n_slots)
        print("wrote " + ", ".join(str(p) for p in paths))


def metric_label(name: str) -> str:
    """`sink_1` -> `Sink_1`, `sink_star` -> `Sink*`, `sink_star_2` -> `Sink*_2`, `sink_token` -> `Sink_tok`."""
    return name.replace("sink_star", "Sink*").replace("sink_token", "Sink_tok").replace("sink_", "Sink_")


def format_table(result: ProbeResult) -> str:
    """A plain-text report of `evaluate_run` / `evaluate_probe` results: overall rates (and why key/value
    norms are missing, for a model that cannot give them), then one row per hidden state (embedding
    output, then each layer, counted from 0) with its sink rates, |activation| extremes and norms."""
    rates = result.sink_rates
    lines = []
    if "variant" in result.about:
        lines.append(f"variant: {result.about['variant']}    tokens seen: {result.about.get('tokens_seen')}")
    lines.append(f"probe: {result.n_sequences} sequences    loss: {result.loss:.4f}    eps: {result.eps}")
    unavailable = result.about.get("unavailable") or {}
    for reason in dict.fromkeys(unavailable.values()):
        names = " and ".join(name for name, why in unavailable.items() if why == reason)
        lines.append(f"norms of {names} unavailable: {reason}")
    lines.append("")
    lines.append("".join(f"{metric_label(name):>10}" for name in rates) + "   (% of layer x head x sequence)")
    lines.append("".join(f"{value:>10.2f}" for value in rates.values()))
    lines.append("")
    per_layer = result.layer_sink_rates
    shown = [name for name in LAYER_SERIES if name in per_layer]
    stats = result.massive_activations
    header = ["layer", *map(metric_label, shown), "top1", "top2", "top3", "median", "|h| pos0", "|h| mean"]
    lines.append("".join(f"{h:>10}" for h in header))
    hidden = result.norms["hidden"]
    assert hidden is not None  # every evaluator measures the hidden states
    n_sink = result.n_sink_tokens
    for layer in range(len(hidden)):
        cells = [f"{per_layer[name][layer - 1]:>10.2f}" if layer else f"{'--':>10}" for name in shown]
        norms = hidden[layer][n_sink:]
        values = [*(stats[s][layer] for s in ("top1", "top2", "top3", "median")), norms[0], sum(norms) / len(norms)]
        label = hidden_state_label(layer)
        lines.append(f"{label:>10}" + "".join(cells) + "".join(f"{v:>10.3f}" for v in values))
    return "\n".join(lines)


__all__ = [
    "EvalError",
    "evaluate_run",
    "example_maps",
    "format_table",
    "publish",
    "metric_label",
    "probe_loss_mask",
    "tokenizer_for",
    "train_args",
]

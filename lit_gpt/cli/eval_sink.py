"""Attention-sink evaluation of a training checkpoint on the probe set (see docs/reference.md for the metric).

    python pretrain/eval_sink_pretrain.py --load_from out/run/iter-020000-ckpt.pth --json out/run/sink.json \
        --plots out/run/plots
    sink-eval --load_from out/run            # a run folder: its newest checkpoint, as sink-report takes it
"""

from pathlib import Path
from typing import Optional

from lit_gpt.core.errors import run_cli
from lit_gpt.core.flags import run_function
from lit_gpt.measurement.probe_defaults import PROBE_LENGTH, PROBE_SEQUENCES, SINK_EPS, SINK_K


def evaluate_checkpoint(
    load_from: Path,
    probe: Path = Path("datasets/probe_valid.jsonl"),
    eps: float = SINK_EPS,
    positions: int = SINK_K,
    json: Optional[Path] = None,
    plots: Optional[Path] = None,
    layers: Optional[list[int]] = None,
    heads: Optional[list[int]] = None,
    tokenizer: Optional[str] = None,
    n_sequences: int = PROBE_SEQUENCES,
    length: int = PROBE_LENGTH,
    batch_size: int = 20,
    costs: bool = False,
) -> None:
    """Report Sink_k, Sink*, per-layer sink rates, probe loss, norms and massive activations.

    Args:
        load_from: Training checkpoint (.pth), or a run folder (its newest checkpoint); the checkpoint's
            config and input transforms are used.
        probe: JSONL probe set with a `text` field per line.
        eps: Threshold on the mean attention a key receives.
        positions: Report Sink_k for k = 1..positions.
        json: Write the full report as JSON to this file.
        plots: Write PNG figures into this folder.
        layers: Layers shown in the attention heatmaps (default: all).
        heads: Heads shown in the attention heatmaps (default: head 0).
        tokenizer: Tokenizer file or folder (default: from the checkpoint's training arguments).
        n_sequences: Number of probe sequences.
        length: Tokens per probe sequence.
        batch_size: Probe sequences per forward pass.
        costs: Also measure what the sink costs (`lit_gpt.measurement.sink_costs`): kurtosis and max |activation| of the
            block outputs, probe perplexity under W8A8 relative to fp32, and StreamingLLM perplexity of the
            probe texts at half the training length keeping 0 or 4 first tokens.
    """
    from lit_gpt.data.documents import iter_texts
    from lit_gpt.data.probe import load_probe_windows
    from lit_gpt.measurement.evaluation import (
        check_report_options,
        evaluate_run,
        example_maps,
        publish,
        tokenizer_for,
        train_args,
    )
    from lit_gpt.measurement.sink_costs import checkpoint_costs, format_costs, streaming_length
    from lit_gpt.measurement.streaming import long_text
    from lit_gpt.reporting.table import run_checkpoint
    from lit_gpt.training.checkpoint import load_model

    check_report_options(eps, positions, n_sequences, length, batch_size)
    load_from = run_checkpoint(load_from)
    model, ckpt = load_model(load_from)
    tokens = load_probe_windows(
        probe, tokenizer_for(train_args(ckpt), tokenizer), length, n_sequences, model.config.vocab_size
    )
    result = evaluate_run(model, ckpt, tokens, eps, positions, batch_size)
    result.about["checkpoint"] = str(load_from)
    if costs:
        text = long_text(
            iter_texts(probe), tokenizer_for(train_args(ckpt), tokenizer), streaming_length(model.config.block_size)
        )
        result.about["costs"] = checkpoint_costs(model, ckpt, tokens, text, batch_size)
    publish(result, lambda: example_maps(model, ckpt, tokens), json, plots, layers, heads, model.config.n_slots)
    if costs:
        print(format_costs(result.about["costs"]))


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: parse the command line (`argv`, default sys.argv) and run `evaluate_checkpoint`."""
    run_cli(lambda: run_function(evaluate_checkpoint, argv))

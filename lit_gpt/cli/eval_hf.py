"""Attention-sink evaluation of a Hugging Face causal LM (LLaMA family), with the metrics used for our
own checkpoints (see pretrain/eval_sink_pretrain.py).

    python eval_sink_open_source.py --model path/to/hf_folder --json out/llama.json --plots out/llama
"""

from pathlib import Path
from typing import Optional

from jsonargparse import CLI

from lit_gpt.data.probe import load_probe_windows
from lit_gpt.errors import run_cli
from lit_gpt.evaluation import PROBE_LENGTH, PROBE_SEQUENCES, check_report_options, publish
from lit_gpt.hf_io import evaluate_hf, hf_example_maps, load_hf_causal_lm, resolve_model_dir
from lit_gpt.tokenizer import load_tokenizer


def evaluate_hf_model(
    model: str,
    probe: Path = Path("datasets/probe_valid.jsonl"),
    tokenizer: Optional[str] = None,
    eps: float = 0.3,
    positions: int = 10,
    json: Optional[Path] = None,
    plots: Optional[Path] = None,
    layers: Optional[list[int]] = None,
    heads: Optional[list[int]] = None,
    n_sequences: int = PROBE_SEQUENCES,
    length: int = PROBE_LENGTH,
    batch_size: int = 10,
) -> None:
    """Report Sink_k, per-layer sink rates, probe loss, norms and massive activations of a HF model.

    Args:
        model: HF model folder or hub id (hub ids need the local HF cache or a reachable hub).
        probe: JSONL probe set with a `text` field per line.
        tokenizer: Tokenizer file or folder (default: the model folder's tokenizer.json / tokenizer.model).
        eps: Threshold on the mean attention a key receives.
        positions: Report Sink_k for k = 1..positions.
        json: Write the full report as JSON to this file.
        plots: Write PNG figures into this folder.
        layers: Layers shown in the attention heatmaps (default: all).
        heads: Heads shown in the attention heatmaps (default: head 0).
        n_sequences: Number of probe sequences.
        length: Tokens per probe sequence (no BOS is added).
        batch_size: Probe sequences per forward pass.
    """
    check_report_options(eps, positions, n_sequences, length, batch_size)
    hf_model = load_hf_causal_lm(model)
    tokens = load_probe_windows(probe, load_tokenizer(tokenizer or resolve_model_dir(model)), length, n_sequences,
                                hf_model.config.vocab_size)
    result = evaluate_hf(hf_model, tokens, eps, positions, batch_size)
    result["model"] = model
    publish(result, lambda: hf_example_maps(hf_model, tokens), json, plots, layers, heads)


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: parse the command line (`argv`, default sys.argv) and run `evaluate_hf_model`."""
    run_cli(lambda: CLI(evaluate_hf_model, as_positional=False, exit_on_error=False, args=argv))

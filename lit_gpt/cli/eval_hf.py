"""Attention-sink evaluation of any Hugging Face causal LM, or of several compared in one table.

    python eval_sink_open_source.py --model path/to/hf_folder --json out/model.json --plots out/model
    python eval_sink_open_source.py --model gpt2_folder --model llama_folder --json out/sinks.json --plots out/plots
    python eval_sink_open_source.py --models models.txt --add_bos true --plots out/plots

The metrics are those of our own checkpoints (pretrain/eval_sink_pretrain.py). Any model transformers
loads as `AutoModelForCausalLM` and that returns attention maps with eager attention is evaluated:
sink rates, probe loss, hidden-state norms and massive activations. Key and value norms need a known
projection layout (`lit_gpt.hf.kv`): separate k_proj / v_proj (LLaMA, Mistral, Qwen, Gemma, OPT, Phi,
GPT-J, GPT-Neo, ...), GPT-2, Phi-3, GPT-NeoX and Bloom; for another architecture the report says in
one line why they are missing.

`--add_bos auto` starts every probe window with BOS when the model's tokenizer adds one when it encodes
(`lit_gpt.hf.bos`; a folder `sink-export-hf` wrote says so for a run trained with a BOS), since the sink
of a model trained with a BOS sits on it; `true` / `false` decide instead. The BOS is written over the
window's first token, as `sink-eval` and our training do, so an exported run gives the numbers its
checkpoint gives (docs/reference.md, "Probe set").

With several models, each one's JSON goes to `<json folder>/<model>/<json name>` and its plots to
`<plots>/<model>/`; comparison.md and comparison.json go next to --json and into --plots, with
comparison.png (Sink_1 per model) in --plots.
"""

from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

from lit_gpt.core.errors import run_cli
from lit_gpt.core.flags import add_aliases, add_config, new_parser
from lit_gpt.core.flags import parse as parse_flags
from lit_gpt.measurement.probe_defaults import PROBE_LENGTH, PROBE_SEQUENCES, SINK_EPS, SINK_K
from lit_gpt.measurement.probe_result import ProbeResult

# torch, transformers and the evaluation are imported by the functions that use them, so `--help` and a refused
# flag answer at once.


def model_specs(model: Union[str, list[str], None], models: Optional[Path]) -> list[str]:
    """The models to evaluate: each --model, then each line of the --models file (blank lines and lines
    starting with # skipped)."""
    from lit_gpt.core.files import read_text
    from lit_gpt.measurement.evaluation import EvalError

    specs = [model] if isinstance(model, str) else list(model or [])
    if models is not None:
        lines = (line.strip() for line in read_text(models, "--models").splitlines())
        specs += [line for line in lines if line and not line.startswith("#")]
    if not specs:
        raise EvalError(
            "no model to evaluate; pass --model HF_FOLDER_OR_HUB_ID (repeatable) or --models FILE with one per line"
        )
    return specs


def evaluate_model(
    spec: str,
    folder: Path,
    probe: Path,
    tokenizer: Optional[str],
    add_bos: str,
    eps: float,
    positions: int,
    n_sequences: int,
    length: int,
    batch_size: int,
) -> tuple[ProbeResult, Callable[[], list]]:
    """One model's sink report, and a function giving its example attention maps (tensors) for the heatmaps."""
    from lit_gpt.data.probe import load_probe_windows
    from lit_gpt.data.tokenizer import load_tokenizer
    from lit_gpt.hf.bos import probe_bos
    from lit_gpt.hf.probe import evaluate_hf, hf_example_maps, load_hf_causal_lm

    hf_model = load_hf_causal_lm(folder)
    vocab_size = hf_model.config.vocab_size
    tok = load_tokenizer(tokenizer or folder)
    bos = probe_bos(add_bos, tok, folder, vocab_size)
    tokens = load_probe_windows(probe, tok, length, n_sequences, vocab_size, bos_id=bos)
    result = evaluate_hf(hf_model, tokens, eps, positions, batch_size)
    result.about.update(model=spec, bos=bos is not None)
    return result, lambda: hf_example_maps(hf_model, tokens)


def evaluate_hf_model(
    model: Union[str, list[str], None] = None,
    models: Optional[Path] = None,
    probe: Path = Path("datasets/probe_valid.jsonl"),
    tokenizer: Optional[str] = None,
    add_bos: Literal["auto", "true", "false"] = "auto",
    eps: float = SINK_EPS,
    positions: int = SINK_K,
    json: Optional[Path] = None,
    plots: Optional[Path] = None,
    layers: Optional[list[int]] = None,
    heads: Optional[list[int]] = None,
    n_sequences: int = PROBE_SEQUENCES,
    length: int = PROBE_LENGTH,
    batch_size: int = 10,
) -> None:
    """Report Sink_k, per-layer sink rates, probe loss, norms and massive activations of HF models.

    Args:
        model: HF model folder or hub id (hub ids need the local HF cache or a reachable hub); repeat
            --model to compare several models.
        models: Text file with one model folder or hub id per line (blank lines and # comments skipped).
        probe: JSONL probe set with a `text` field per line.
        tokenizer: Tokenizer file or folder (default: each model folder's tokenizer.json / tokenizer.model).
        add_bos: Start each probe window with the model's BOS token, written over the text's first token:
            auto (when its tokenizer adds one when encoding), true or false.
        eps: Threshold on the mean attention a key receives.
        positions: Report Sink_k for k = 1..positions.
        json: Write the full report as JSON to this file (several models: the same file name in a
            sub-folder per model, and comparison.md / comparison.json in this file's folder).
        plots: Write PNG figures into this folder (several models: a sub-folder per model, and
            comparison.md / comparison.json / comparison.png here).
        layers: Layers shown in the attention heatmaps (default: all).
        heads: Heads shown in the attention heatmaps (default: head 0).
        n_sequences: Number of probe sequences.
        length: Tokens per probe window, the BOS included when one is added.
        batch_size: Probe sequences per forward pass.
    """
    from lit_gpt.hf.compare import comparison_row, model_names
    from lit_gpt.hf.io import resolve_model_dir
    from lit_gpt.measurement.evaluation import check_report_options, publish

    check_report_options(eps, positions, n_sequences, length, batch_size)
    specs = model_specs(model, models)
    names = model_names(specs)
    folders = [resolve_model_dir(spec) for spec in specs]  # every typo is named before the first evaluation
    settings: dict[str, Any] = dict(
        probe=probe,
        tokenizer=tokenizer,
        add_bos=add_bos,
        eps=eps,
        positions=positions,
        n_sequences=n_sequences,
        length=length,
        batch_size=batch_size,
    )
    if len(specs) == 1:
        result, maps = evaluate_model(specs[0], folders[0], **settings)
        publish(result, maps, json, plots, layers, heads)
        return
    rows = []
    for spec, name, folder in zip(specs, names, folders):
        print(f"== {name} ({spec})")
        result, maps = evaluate_model(spec, folder, **settings)
        publish(
            result,
            maps,
            None if json is None else json.parent / name / json.name,
            None if plots is None else plots / name,
            layers,
            heads,
        )
        rows.append(comparison_row(name, result))
        print()
    publish_comparison(rows, json, plots)


def publish_comparison(rows: list[dict], json: Optional[Path], plots: Optional[Path]) -> None:
    """Print the comparison table; write it into --json's folder and into --plots, the chart into --plots."""
    from lit_gpt.hf.compare import comparison_markdown, write_comparison

    print(comparison_markdown(rows))
    folders = dict.fromkeys(folder for folder in (None if json is None else json.parent, plots) if folder is not None)
    written = [path for folder in folders for path in write_comparison(rows, folder, chart=folder == plots)]
    if written:
        print("wrote " + ", ".join(str(path) for path in written))


def parse(argv: Optional[list[str]] = None) -> dict:
    """The command line as `evaluate_hf_model` arguments; --model may be given any number of times."""
    parser = new_parser(__doc__.splitlines()[0])
    add_config(parser)
    parser.add_argument(
        "--model",
        action="append",
        type=str,
        help="HF model folder or hub id (hub ids need the local HF cache or a reachable hub); "
        "repeat it to compare several models.",
    )
    parser.add_function_arguments(evaluate_hf_model, skip={"model"})
    add_aliases(parser)
    values = parse_flags(parser, argv).as_dict()
    values.pop("config", None)
    return values


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: parse the command line (`argv`, default sys.argv) and run `evaluate_hf_model`."""
    run_cli(lambda: evaluate_hf_model(**parse(argv)))

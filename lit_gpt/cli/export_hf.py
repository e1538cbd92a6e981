"""Export a training checkpoint as a Hugging Face LLaMA or GPT-2 folder (config.json + model.safetensors).

    sink-export-hf --load_from checkpoints/run/iter-000700-ckpt.pth --out_dir out/hf_run --tokenizer datasets/embedded
    python pretrain/export_hf.py --load_from ... --out_dir ...

A model with learned positions is exported as a GPT-2, any other as a LLaMA, and only variants that HF
model computes (softmax, no key slots or sink tokens; RoPE, RMSNorm and a gated MLP for a LLaMA;
LayerNorm, biases and a plain MLP for a GPT-2; pre-norm for both); any other is refused before anything
is written. Files already in `out_dir` other than the ones written
here are left alone.

config.json, generation_config.json and the tokenizer's tokenizer_config.json declare the BOS the run was
trained with (its fixed token at position 0; none for a run without one) and its tokenizer's EOS, and the
exported tokenizer puts that BOS before every text it encodes, so transformers, `eval_sink_open_source.py`
and `sink-eval` / `sink-generate` give the model the same inputs (docs/reference.md, "Probe set").
"""

from pathlib import Path
from typing import Optional

from lit_gpt.core.errors import run_cli
from lit_gpt.core.flags import run_function


def export(load_from: Path, out_dir: Path, tokenizer: Optional[str] = None) -> Path:
    """Write the checkpoint's model as a HF LLaMA or GPT-2 folder.

    Args:
        load_from: Training checkpoint (.pth).
        out_dir: Folder for config.json, generation_config.json, model.safetensors (and the tokenizer files).
        tokenizer: Tokenizer file or folder to export alongside (e.g. the run's data folder), made to add the
            run's BOS when it encodes.
    """
    from lit_gpt.hf.io import export_hf

    folder = export_hf(load_from, out_dir, tokenizer)
    print(f"wrote {folder}")
    return folder


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: parse the command line (`argv`, default sys.argv) and export."""
    run_cli(lambda: run_function(export, argv))

"""Pretrain a LLaMA-style model with a chosen attention variant (upstream's script name and flags).

    sink-train --config configs/tinyllama_60m.yaml --model.attn_score sigmoid --model.attn_normalize none \
        --out_name sigmoid_no_norm
    python pretrain/tinyllama.py --data_yaml_file configs/tinyllama_60m.yaml --out_name tinyllama_60m

See pretrain/README.md; `--help` lists every option.
"""

from typing import Optional

from lit_gpt.core.errors import run_cli
from lit_gpt.training.run_config import parse_plan


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: parse the command line (`argv`, default sys.argv) and train. The trainer (torch,
    Lightning) is imported once the arguments are read, so `--help` and a refused flag answer at once."""
    run_cli(lambda: _train(parse_plan(argv)))


def _train(plan) -> None:
    from lit_gpt.training.trainer import setup

    setup(plan)

"""Pretrain a LLaMA-style model with a chosen attention variant (upstream's script name and flags).

    python pretrain/tinyllama.py --data_yaml_file configs/tinyllama_60m.yaml --out_name tinyllama_60m
    python pretrain/tinyllama.py --config configs/tinyllama_60m.yaml --model.attn_score sigmoid \
        --model.attn_normalize none --out_name sigmoid_no_norm

See pretrain/README.md; `--help` lists every option.
"""

import sys
from pathlib import Path

# Run from a checkout without installing the package, as upstream's scripts did.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lit_gpt.errors import run_cli  # noqa: E402
from lit_gpt.run_config import parse_args  # noqa: E402
from lit_gpt.trainer import setup  # noqa: E402

if __name__ == "__main__":
    run_cli(lambda: setup(parse_args()))

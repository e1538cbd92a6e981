"""Pretrain a LLaMA-style model with a chosen attention variant (upstream's script name and flags).

    python pretrain/tinyllama.py --data_yaml_file configs/tinyllama_60m.yaml --out_name tinyllama_60m
    python pretrain/tinyllama.py --config configs/tinyllama_60m.yaml --model.attn_score sigmoid \
        --model.attn_normalize none --out_name sigmoid_no_norm

The same as the `sink-train` command; see pretrain/README.md. `--help` lists every option.
"""

from lit_gpt.cli.train import main

if __name__ == "__main__":
    main()

"""Helpers of scripts/reproduce.sh; see `lit_gpt.cli.reproduce`.

python scripts/reproduce.py plan --checkpoint_root checkpoints --scale cpu --rows '[softmax, kv_bias]'
python scripts/reproduce.py doc --checkpoint_root checkpoints --scale cpu --doc docs/reproduction.md
"""

from lit_gpt.cli.reproduce import main

if __name__ == "__main__":
    main()

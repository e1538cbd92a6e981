"""Sample from a training checkpoint with a KV cache: the quickest sanity check of a run.

    python pretrain/generate.py --load_from out/run/iter-020000-ckpt.pth --prompt "The meaning of" --top_k 50 \
        --temperature 0.8
"""

from lit_gpt.cli.generate import main

if __name__ == "__main__":
    main()

"""StreamingLLM-style evaluation: perplexity on long validation text with a KV cache of the last W tokens,
with and without keeping the first n tokens (attention-sink cache), against full attention.

    python pretrain/eval_streaming.py --load_from '[out/softmax/iter-020000-ckpt.pth, out/sigmoid/iter-020000-ckpt.pth]' \
        --text datasets/probe_valid.jsonl --length 4096 --window 256 --n_sink 4
"""

from lit_gpt.cli.streaming import main

if __name__ == "__main__":
    main()

"""Attention-sink evaluation of a training checkpoint on the probe set (see docs/reference.md for the metric).

    python pretrain/eval_sink_pretrain.py --load_from out/run/iter-020000-ckpt.pth --json out/run/sink.json \
        --plots out/run/plots
"""

from lit_gpt.cli.eval_sink import main

if __name__ == "__main__":
    main()

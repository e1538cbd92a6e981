"""One table over many runs: sink rates, losses and massive activations (Markdown, CSV, bar chart).

Columns: run, variant, Sink_1, Sink*, valid and probe loss, the largest top-1 / median |activation| over
the hidden states and its layer, tokens seen, step; report.md adds each run's massive activations per layer.

    python pretrain/report.py out/softmax out/sigmoid out/kv_bias --probe datasets/probe_valid.jsonl --out out/report
"""

from lit_gpt.cli.report import main

if __name__ == "__main__":
    main()

"""One table over many runs: run, variant, Sink_1, Sink*, valid/probe loss, tokens seen (Markdown, CSV, bar chart).

    python pretrain/report.py out/softmax out/sigmoid out/kv_bias --probe datasets/probe_valid.jsonl --out out/report
"""

from lit_gpt.cli.report import main

if __name__ == "__main__":
    main()

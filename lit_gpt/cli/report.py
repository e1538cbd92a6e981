"""One table over many runs: sink rates, losses and massive activations (Markdown, CSV, bar chart).

Columns: run, variant, Sink_1, Sink*, valid and probe loss, the largest top-1 / median |activation| over
the hidden states and its layer, tokens seen, step; report.md adds each run's massive activations per layer.

    python pretrain/report.py out/softmax out/sigmoid out/kv_bias --probe datasets/probe_valid.jsonl --out out/report
"""

from pathlib import Path
from typing import Optional

from jsonargparse import ArgumentParser

from lit_gpt.errors import run_cli
from lit_gpt.evaluation import check_eps
from lit_gpt.files import write_atomic
from lit_gpt.report import bar_chart, report_markdown, report_rows, write_csv


def report(runs: list[str], probe: Path = Path("datasets/probe_valid.jsonl"), out: Optional[Path] = None,
         eps: float = 0.3, tokenizer: Optional[str] = None) -> str:
    check_eps(eps)
    rows = report_rows(runs, probe, tokenizer, eps)
    table = report_markdown(rows)
    print(table)
    if out is not None:
        write_atomic(out / "report.md", table + "\n")
        written = [out / "report.md", write_csv(rows, out / "report.csv"), bar_chart(rows, out / "report.png")]
        print("wrote " + ", ".join(str(p) for p in written))
    return table


def parse(argv: Optional[list[str]] = None) -> dict:
    parser = ArgumentParser(description=__doc__.splitlines()[0], exit_on_error=False)
    parser.add_argument("runs", nargs="+", help="Run folders (newest iter-*-ckpt.pth is used) or checkpoint files.")
    parser.add_argument("--probe", type=Path, default=Path("datasets/probe_valid.jsonl"),
                        help="JSONL probe set with a `text` field per line.")
    parser.add_argument("--out", type=Optional[Path], default=None,
                        help="Folder for report.md, report.csv and report.png.")
    parser.add_argument("--eps", type=float, default=0.3, help="Sink threshold.")
    parser.add_argument("--tokenizer", type=Optional[str], default=None,
                        help="Tokenizer file or folder (default: each run's own).")
    return vars(parser.parse_args(argv))


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: parse the command line (`argv`, default sys.argv) and write the report."""
    run_cli(lambda: report(**parse(argv)))

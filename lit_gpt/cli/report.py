"""One table over many runs: sink rates, losses and massive activations (Markdown, CSV, bar chart).

Columns: run, variant, Sink_1, Sink*, valid and probe loss, the largest top-1 / median |activation| over
the layers' outputs and its layer (from 0), the embedding output's ratio, tokens seen, step; report.md adds
each run's massive activations per layer.

    python pretrain/report.py out/softmax out/sigmoid out/kv_bias --probe datasets/probe_valid.jsonl --out out/report
"""

from pathlib import Path
from typing import Optional

from lit_gpt.core.errors import UserError, run_cli
from lit_gpt.core.flags import add_aliases, add_config, new_parser
from lit_gpt.core.flags import parse as parse_flags
from lit_gpt.measurement.probe_defaults import SINK_EPS


def report(
    runs: list[str],
    probe: Path = Path("datasets/probe_valid.jsonl"),
    out: Optional[Path] = None,
    eps: float = SINK_EPS,
    tokenizer: Optional[str] = None,
    html: bool = False,
    wandb: bool = False,
) -> str:
    from lit_gpt.core.files import write_atomic
    from lit_gpt.measurement.evaluation import check_eps
    from lit_gpt.reporting.html import write_html
    from lit_gpt.reporting.table import COLUMNS, bar_chart, report_markdown, report_rows, write_csv
    from lit_gpt.training.loggers import log_report

    check_eps(eps)
    if html and out is None:
        raise UserError("--html writes report.html into the --out folder; give --out")
    if wandb and out is None:
        raise UserError("--wandb logs the table and chart of the --out folder (its wandb run lives there); give --out")
    rows = report_rows(runs, probe, tokenizer, eps)
    table = report_markdown(rows)
    print(table)
    if out is not None:
        write_atomic(out / "report.md", table + "\n")
        written = [out / "report.md", write_csv(rows, out / "report.csv"), bar_chart(rows, out / "report.png")]
        if html:
            written.append(write_html(out / "report.html", rows))
        print("wrote " + ", ".join(str(p) for p in written))
        if wandb:
            run = log_report(rows, COLUMNS, out / "report.png", out)
            print(f"logged the table and chart to the wandb run in {run}")
    return table


def parse(argv: Optional[list[str]] = None) -> dict:
    parser = new_parser(__doc__.splitlines()[0])
    add_config(parser)
    parser.add_argument("runs", nargs="+", help="Run folders (newest iter-*-ckpt.pth is used) or checkpoint files.")
    parser.add_argument(
        "--probe",
        type=Path,
        default=Path("datasets/probe_valid.jsonl"),
        help="JSONL probe set with a `text` field per line.",
    )
    parser.add_argument(
        "--out", type=Optional[Path], default=None, help="Folder for report.md, report.csv and report.png."
    )
    parser.add_argument("--eps", type=float, default=0.3, help="Sink threshold.")
    parser.add_argument(
        "--tokenizer", type=Optional[str], default=None, help="Tokenizer file or folder (default: each run's own)."
    )
    parser.add_argument(
        "--html",
        action="store_true",
        help="Also write report.html into --out: one self-contained page (table, curves over "
        "steps, per-layer bars, links to each run's PNGs) to open in a browser.",
    )
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="Also log the table (a wandb Table) and report.png to a wandb run kept in --out "
        "(offline unless WANDB_API_KEY is set), in the sweep's group: WANDB_RUN_GROUP, else "
        "the --out folder's name without `_report`.",
    )
    add_aliases(parser)
    values = parse_flags(parser, argv).as_dict()
    values.pop("config", None)
    return values


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: parse the command line (`argv`, default sys.argv) and write the report."""
    run_cli(lambda: report(**parse(argv)))

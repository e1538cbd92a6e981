"""The reproduction grid of scripts/reproduce.sh: which runs it trains and which are finished, and the
tables of docs/reproduction.md built from their evaluations (see `lit_gpt.reporting.reproduction`).

    sink-reproduce plan --checkpoint_root checkpoints --scale cpu
    sink-reproduce doc --checkpoint_root checkpoints --scale cpu --out checkpoints/reproduction_cpu.md \
        --doc docs/reproduction.md
"""

from pathlib import Path
from typing import Optional

from jsonargparse import CLI

from lit_gpt.core.errors import run_cli
from lit_gpt.core.files import write_atomic
from lit_gpt.reporting.reproduction import load_results, render
from lit_gpt.reporting.reproduction import plan as grid_plan
from lit_gpt.reporting.sweeps import fill_results


def plan(
    checkpoint_root: Path = Path("checkpoints"),
    scale: str = "cpu",
    rows: Optional[list[str]] = None,
    max_step: Optional[int] = None,
) -> None:
    """Print one line per run: run name, config, seed, `done`, `evaluate` (trained, to evaluate) or `todo`.

    Args:
        checkpoint_root: Parent of the run folders.
        scale: `paper` or `cpu` (run folders carry `_<scale>` below the paper scale).
        rows: Rows of the grid to run (default: all), e.g. `[softmax, kv_bias]`.
        max_step: The step every run trains to (a smoke run's MAX_STEPS; default: each run's run.yaml).
    """
    print("\n".join(grid_plan(checkpoint_root, scale, rows, max_step)))


def doc(
    checkpoint_root: Path = Path("checkpoints"),
    scale: str = "cpu",
    out: Optional[Path] = None,
    doc: Optional[Path] = None,
    max_step: Optional[int] = None,
) -> None:
    """Build the reproduction tables from the finished runs: print them, write them to `out`, and put them
    into the `reproduction <scale>` results block of `doc`.

    Args:
        checkpoint_root: Parent of the run folders.
        scale: `paper` or `cpu`.
        out: Write the tables to this Markdown file.
        doc: Fill the results block of this doc (docs/reproduction.md).
        max_step: The step every run trains to (a smoke run's MAX_STEPS; default: each run's run.yaml).
    """
    tables = render(load_results(checkpoint_root, scale, max_step), scale)
    print(tables)
    if out is not None:
        write_atomic(out, tables + "\n")
        print(f"wrote {out}")
    if doc is not None:
        if not fill_results(doc, f"reproduction {scale}", tables):
            print(f"{doc} has no results block 'reproduction {scale}'; left unchanged")
        else:
            print(f"filled {doc}")


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: `plan` or `doc` with its flags."""
    run_cli(lambda: CLI([plan, doc], as_positional=False, exit_on_error=False, args=argv))

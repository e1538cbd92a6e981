"""Attention-head superposition toy: standard heads vs per-head output gates on OV-incoherent skip trigrams.

Trains every arm for every seed, ablates each head of each model, and writes results.md, results.json and
the plots to --out (see README.md next to this file):

    python experiments/superposition/run.py                       # the write-up's numbers, a few minutes on CPU
    python experiments/superposition/run.py --seeds 1 --arms '[standard, gated]' --out out/superposition
"""

from pathlib import Path
from typing import Optional

from jsonargparse import ArgumentParser, set_parsing_settings

from lit_gpt.core.errors import run_cli
from lit_gpt.studies.superposition.settings import Study
from lit_gpt.studies.superposition.study import run_study

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse(argv: Optional[list[str]] = None) -> tuple[Study, Path]:
    """One flag per `Study` field (its docstring as help) and --out; the `Study` checks the values."""
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(description=__doc__.splitlines()[0], exit_on_error=False)
    parser.add_class_arguments(Study, nested_key=None)
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="Folder for results.md, results.json and the plots."
    )
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    return Study(**args), out


def main(argv: Optional[list[str]] = None) -> None:
    run_cli(lambda: run_study(*parse(argv)))


if __name__ == "__main__":
    main()

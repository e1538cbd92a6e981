"""Attention-head superposition toy: standard heads vs per-head output gates on OV-incoherent skip trigrams.

Trains every arm for every seed, ablates each head of each model, and writes results.md, results.json and
the plots to --out (see README.md next to this file):

    python experiments/superposition/run.py                       # the write-up's numbers, a few minutes on CPU
    python experiments/superposition/run.py --seeds 1 --arms '[standard, gated]' --out out/superposition
"""

import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Optional

import docstring_parser
from jsonargparse import ArgumentParser

from lit_gpt.errors import run_cli
from lit_gpt.studies.superposition import Study, run_study

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse(argv: Optional[list[str]] = None) -> tuple[Study, Path]:
    """One flag per `Study` field (its docstring as help) and --out; the `Study` checks the values."""
    parser = ArgumentParser(description=__doc__.splitlines()[0], exit_on_error=False)
    hints = typing.get_type_hints(Study)
    docs = {param.arg_name: param.description for param in docstring_parser.parse_from_object(Study).params}
    for f in fields(Study):
        default = f.default if f.default is not MISSING else f.default_factory()
        parser.add_argument(f"--{f.name}", type=hints[f.name], default=default, help=docs.get(f.name))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Folder for results.md, results.json and the plots.")
    args = parser.parse_args(argv)
    return Study(**{f.name: args[f.name] for f in fields(Study)}), args.out


def main(argv: Optional[list[str]] = None) -> None:
    run_cli(lambda: run_study(*parse(argv)))


if __name__ == "__main__":
    main()

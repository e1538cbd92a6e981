"""High attention scores and where to find them: exact top-k vs FAVOR+ vs k-means buckets on trained runs.

Writes results.md, results.json and three PNG plots to --out (see README.md next to this file):

    python experiments/approximate_attention/run.py       # the demo's softmax and sigmoid runs (`make demo` first)
    python experiments/approximate_attention/run.py --runs '[checkpoints/kv_bias_cpu]' --k '[4, 8]' --out /tmp/aa
"""

from pathlib import Path
from typing import Optional

import torch
from jsonargparse import ArgumentParser, set_parsing_settings

from lit_gpt.core.errors import run_cli
from lit_gpt.studies.retrieval.report import write_results
from lit_gpt.studies.retrieval.study import DEMO_RUNS, StudySettings, run_study

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse(argv: Optional[list[str]] = None) -> dict:
    """--runs, --probe, --tokenizer, --out, --threads and one flag per `StudySettings` field (its docstring as help)."""
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(description=__doc__.splitlines()[0], exit_on_error=False)
    parser.add_argument(
        "--runs",
        type=list[str],
        default=list(DEMO_RUNS),
        help="Run folders (their newest iter-*-ckpt.pth) or checkpoint files.",
    )
    parser.add_argument(
        "--probe",
        type=Path,
        default=Path("datasets/probe_valid.jsonl"),
        help="JSONL probe set with a `text` field per line.",
    )
    parser.add_argument(
        "--tokenizer", type=Optional[str], default=None, help="Tokenizer file or folder (default: each run's own)."
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="Folder for results.md, results.json and the plots."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch. The study runs many small tensor operations, where extra "
        "threads mostly wait for each other (README.md next to this file has the timings).",
    )
    parser.add_class_arguments(StudySettings, nested_key=None)
    args = vars(parser.parse_args(argv))
    options = {name: args.pop(name) for name in ("runs", "probe", "tokenizer", "out", "threads")}
    return {**options, "settings": StudySettings(**args)}


def main(argv: Optional[list[str]] = None) -> None:
    def study() -> None:
        args = parse(argv)
        torch.set_num_threads(max(1, args["threads"]))
        result = run_study(args["runs"], args["probe"], args["tokenizer"], args["settings"])
        print("wrote " + ", ".join(str(path) for path in write_results(result, args["out"])))

    run_cli(study)


if __name__ == "__main__":
    main()

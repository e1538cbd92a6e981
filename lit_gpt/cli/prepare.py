"""Build token shards from documents; see `lit_gpt.data.prepare.prepare` for the options.

    sink-prepare --source embedded --vocab_size 512
    bash preprocess/run_preprocess.sh --source embedded --vocab_size 512

Bad input ends the run with one line on stderr naming the file and the fix, and a non-zero exit status.
"""

from typing import Optional

from lit_gpt.core.errors import run_cli
from lit_gpt.core.flags import run_function
from lit_gpt.data.prepare import prepare


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: parse the command line (`argv`, default sys.argv) and build the shards."""
    run_cli(lambda: run_function(prepare, argv))

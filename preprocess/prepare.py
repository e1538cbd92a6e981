"""Command line for building token shards; see `lit_gpt.data.prepare.prepare` for the options.

Bad input ends the run with one line on stderr naming the file and the fix, and exit status 1.
"""

import sys
from pathlib import Path

from jsonargparse import CLI

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lit_gpt.data.prepare import prepare  # noqa: E402
from lit_gpt.errors import run_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(lambda: CLI(prepare, as_positional=False, exit_on_error=False))

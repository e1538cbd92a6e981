"""Command line for building token shards; see `lit_gpt.data.prepare.prepare` for the options.

Bad input ends the run with one line on stderr naming the file and the fix, and exit status 1.
"""

import sys
from pathlib import Path

from jsonargparse import CLI

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lit_gpt.data.errors import DataError  # noqa: E402
from lit_gpt.data.prepare import prepare  # noqa: E402
from lit_gpt.tokenizer import TokenizerError  # noqa: E402

if __name__ == "__main__":
    try:
        CLI(prepare, as_positional=False)
    except (DataError, TokenizerError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)

"""Command line for building token shards (the same as `sink-prepare`); see `lit_gpt.data.prepare.prepare`.

Bad input ends the run with one line on stderr naming the file and the fix, and a non-zero exit status.
"""

from lit_gpt.cli.prepare import main

if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Build training shards. Default: sail/regmix-data-sample from the hub with the GPT-NeoX tokenizer (as
# upstream). Offline: `--source embedded`, or `--source jsonl --input_dir <folder>`. All arguments are
# forwarded to preprocess/prepare.py (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
exec "$PYTHON" preprocess/prepare.py --source hub "$@"

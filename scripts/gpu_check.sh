#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py; bench/README.md says what each check shows and how long it takes).
#
#   bash scripts/gpu_check.sh [--dry-run] [--out_dir DIR] [--only CHECK ...]
#   bash scripts/gpu_check.sh --download-wheels    # where pip reaches an index: the wheels a GPU machine lacks
#
# It needs torch, Lightning and pytest, and no network. Where pytest is missing it is installed, for this run
# only, from the wheels in out/gpu_check_wheels (made by --download-wheels and carried along with the tree;
# pure-Python, about 3 MB), into a temporary folder that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=out/gpu_check_wheels
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

if [ "${1:-}" = "--download-wheels" ]; then
  "$PYTHON" -m pip download --quiet --only-binary=:all: --dest "$WHEELS" pytest
  echo "$(du -sh "$WHEELS" | cut -f1) of wheels in $WHEELS: carry that folder with the tree to the GPU machine"
  exit 0
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c "import pytest" 2>/dev/null; then
  if ! ls "$WHEELS"/pytest-*.whl >/dev/null 2>&1; then
    echo "error: pytest is not installed and $WHEELS holds no pytest wheel; run 'bash scripts/gpu_check.sh" \
         "--download-wheels' where pip reaches an index and carry $WHEELS along" >&2
    exit 1
  fi
  site=$(mktemp -d)
  trap 'rm -rf "$site"' EXIT
  "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" --target "$site" pytest
  export PYTHONPATH="$PYTHONPATH:$site"
fi
"$PYTHON" bench/gpu_check.py "$@"

#!/usr/bin/env bash
# Upstream's name for the ALiBi / relative-position runs; they are position encodings like any other.
# Usage: bash scripts/model_architecture/run_relpos.sh [alibi|relative ...]
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_pos.sh" "${@:-alibi relative}"

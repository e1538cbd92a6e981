#!/usr/bin/env bash
# Upstream's name for scripts/run_default.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_default.sh" "$@"

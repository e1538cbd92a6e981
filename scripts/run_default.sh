#!/usr/bin/env bash
# The 60M softmax baseline every sweep compares against. Usage: bash scripts/run_default.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
refuse_arguments "$@"
RESULTS_DOC=scripts/defaults.md

run_experiment tinyllama_60M defaults configs/tinyllama_60m.yaml

#!/usr/bin/env bash
# The 1B softmax model (40k steps, 8 GPUs). Usage: bash scripts/run_defaults_1b.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
refuse_arguments "$@"
RESULTS_DOC=scripts/defaults.md

run_experiment tinyllama_1b defaults configs/tinyllama_1b.yaml

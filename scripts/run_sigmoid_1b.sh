#!/usr/bin/env bash
# The 1B model with sigmoid attention without normalisation. Usage: bash scripts/run_sigmoid_1b.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
refuse_arguments "$@"
RESULTS_DOC=scripts/defaults.md

run_experiment tinyllama_1b_sigmoid defaults configs/tinyllama_1b_sigmoid.yaml

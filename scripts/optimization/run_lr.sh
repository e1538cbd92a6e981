#!/usr/bin/env bash
# Learning-rate sweep. Usage: bash scripts/optimization/run_lr.sh [LR...]  (default: 1e-3 1e-4 1e-5)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/optimization.md

for value in ${@:-1e-3 1e-4 1e-5}; do
    run_experiment "tinyllama_60M_lr$value" lr "configs/lr/tinyllama_60m_lr$value.yaml"
done

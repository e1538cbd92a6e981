#!/usr/bin/env bash
# Weight-decay sweep. Usage: bash scripts/loss_function/run_decay.sh [DECAY...]
# (default: 0 1e-3 1e-2 5e-1 1e0 2e0 5e0 1e1; 0.1 is the default run)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/loss_function.md

for value in ${@:-0 1e-3 1e-2 5e-1 1e0 2e0 5e0 1e1}; do
    run_experiment "tinyllama_60M_decay$value" decay "configs/decay/tinyllama_60m_decay$value.yaml"
done

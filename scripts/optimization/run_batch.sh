#!/usr/bin/env bash
# Batch-size sweep. Usage: bash scripts/optimization/run_batch.sh [BATCH...]  (default: 128 256 1024)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/optimization.md

for value in ${@:-128 256 1024}; do
    run_experiment "tinyllama_60M_batch$value" batch "configs/batch/tinyllama_60m_batch$value.yaml"
done

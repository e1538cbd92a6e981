#!/usr/bin/env bash
# Sliding-window attention. Usage: bash scripts/loss_function/run_window.sh [WINDOW...]
# (default: 32 64 128 256 512 1024; the cpu scale uses the same fractions of its block)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/loss_function.md

for value in ${@:-32 64 128 256 512 1024}; do
    run_experiment "tinyllama_60M_window$value" window "configs/window/tinyllama_60m_window$value.yaml"
done

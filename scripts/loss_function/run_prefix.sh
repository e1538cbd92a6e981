#!/usr/bin/env bash
# Prefix language modelling. Usage: bash scripts/loss_function/run_prefix.sh [PREFIX...]  (default: 2 3 4 5 10)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/loss_function.md

for value in ${@:-2 3 4 5 10}; do
    run_experiment "tinyllama_60M_prefix$value" prefix "configs/prefix/tinyllama_60m_prefix$value.yaml"
done

#!/usr/bin/env bash
# A fixed token at position p. Usage: bash scripts/data_distribution/run_fix_token.sh [POSITION...]  (default: 0 1 2)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/data_distribution.md

for value in ${@:-0 1 2}; do
    run_experiment "tinyllama_60M_fix_position$value" fix_token "configs/fix_token/tinyllama_60m_fix_position$value.yaml"
done

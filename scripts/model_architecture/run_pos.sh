#!/usr/bin/env bash
# Position encodings. Usage: bash scripts/model_architecture/run_pos.sh [POS...]
# (default: nope absolute learnable alibi relative; RoPE is the default run)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/model_architecture.md

for value in ${@:-nope absolute learnable alibi relative}; do
    run_experiment "tinyllama_60M_$value" pos "configs/pos/tinyllama_60m_$value.yaml"
done

#!/usr/bin/env bash
# Feed-forward networks. Usage: bash scripts/model_architecture/run_ffn.sh [FFN...]
# (default: relu gelu swish reglu geglu; SwiGLU is the default run)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/model_architecture.md

for value in ${@:-relu gelu swish reglu geglu}; do
    run_experiment "tinyllama_60M_$value" ffn "configs/ffn/tinyllama_60m_$value.yaml"
done

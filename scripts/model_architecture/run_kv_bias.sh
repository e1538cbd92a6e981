#!/usr/bin/env bash
# Learned key/value biases. Usage: bash scripts/model_architecture/run_kv_bias.sh [SUFFIX...]
# (default: k_bias k_head_bias kv_bias kv_head_bias v_bias v_head_bias)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/model_architecture.md

for value in ${@:-k_bias k_head_bias kv_bias kv_head_bias v_bias v_head_bias}; do
    run_experiment "tinyllama_60M_$value" kv_bias "configs/kv_bias/tinyllama_60m_$value.yaml"
done

#!/usr/bin/env bash
# Kernel (feature-map) attention. Usage: bash scripts/model_architecture/run_kernel.sh [KERNEL...]
# (default: linear_norm linear_no_norm elu_norm elu_no_norm mlp_norm mlp_no_norm)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/model_architecture.md

for value in ${@:-linear_norm linear_no_norm elu_norm elu_no_norm mlp_norm mlp_no_norm}; do
    run_experiment "tinyllama_60M_kernel_$value" attnkernel "configs/attnkernel/tinyllama_60m_$value.yaml"
done

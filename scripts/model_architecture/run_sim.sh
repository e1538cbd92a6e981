#!/usr/bin/env bash
# Similarity functions in place of exp. Usage: bash scripts/model_architecture/run_sim.sh [SIM...]
# (default: sigmoid_norm sigmoid_no_norm elu_norm elu_no_norm)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/model_architecture.md

for value in ${@:-sigmoid_norm sigmoid_no_norm elu_norm elu_no_norm}; do
    run_experiment "tinyllama_60M_sim_$value" attnsim "configs/attnsim/tinyllama_60m_sim_$value.yaml"
done

#!/usr/bin/env bash
# Data-amount sweep: train on a share of the training tokens. Usage:
#   bash scripts/data_distribution/run_data_amount.sh [RATIO...]   (default: 0.01 0.02 0.1 0.2 0.5)
# Any ratio in (0, 1] works; ratios without a file in configs/data_amount/ are passed on the command line.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/data_distribution.md

for ratio in ${@:-0.01 0.02 0.1 0.2 0.5}; do
    config="configs/data_amount/tinyllama_60m_downsample_ratio$ratio.yaml"
    if [ -f "$config" ]; then
        run_experiment "tinyllama_60M_downsample_ratio$ratio" data_amount "$config"
    else
        run_experiment "tinyllama_60M_downsample_ratio$ratio" data_amount configs/tinyllama_60m.yaml --downsample_ratio "$ratio"
    fi
done

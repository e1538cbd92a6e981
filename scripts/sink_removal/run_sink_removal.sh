#!/usr/bin/env bash
# Variants that give attention somewhere else to go than the first token (not in the paper).
# Usage: bash scripts/sink_removal/run_sink_removal.sh [VARIANT...]
#   (default: off_by_one sink_logit sink_token gate_headwise gate_elementwise)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/sink_removal.md

for variant in ${@:-off_by_one sink_logit sink_token gate_headwise gate_elementwise}; do
    case "$variant" in
        gate_*) config="configs/gate/tinyllama_60m_$variant.yaml" ;;
        *) config="configs/$variant.yaml" ;;
    esac
    run_experiment "tinyllama_60M_$variant" sink_removal "$config"
done

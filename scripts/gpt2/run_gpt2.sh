#!/usr/bin/env bash
# GPT-2 small as it is, with a learned sink token and with per-head attention biases k*, v* (the
# massive-activations comparison). Usage: bash scripts/gpt2/run_gpt2.sh [VARIANT...]
#   (default: default sink_token kv_bias)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/gpt2.md

for variant in ${@:-default sink_token kv_bias}; do
    case "$variant" in
        default) name=gpt2_small config=configs/gpt2/gpt2_small.yaml ;;
        *) name="gpt2_small_$variant" config="configs/gpt2/gpt2_small_$variant.yaml" ;;
    esac
    run_experiment "$name" gpt2 "$config"
done

#!/usr/bin/env bash
# Random tokens at positions [START, END) of every window. Usage, as upstream:
#   bash scripts/data_distribution/run_random_token.sh START END   (one span)
#   bash scripts/data_distribution/run_random_token.sh             (0 1, 0 2 and 0 5)
# No separate data set is needed: the loader draws the tokens.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_flags "$@"
RESULTS_DOC=scripts/data_distribution.md

if [ "$#" -eq 2 ]; then spans=("$1_$2"); else spans=(0_1 0_2 0_5); fi
for span in "${spans[@]}"; do
    config="configs/random_token/tinyllama_60m_random$span.yaml"
    if [ ! -f "$config" ]; then
        # Any other span: the [0, 1) config with the span's bounds on the command line.
        run_experiment "tinyllama_60M_random$span" random_token configs/random_token/tinyllama_60m_random0_1.yaml \
            --random_token_start "${span%_*}" --random_token_end "${span#*_}"
    else
        run_experiment "tinyllama_60M_random$span" random_token "$config"
    fi
done

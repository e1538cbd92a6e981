#!/usr/bin/env bash
# Post layer normalisation. Usage: bash scripts/model_architecture/run_postln.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
refuse_arguments "$@"
RESULTS_DOC=scripts/model_architecture.md

run_experiment tinyllama_60M_postln postln configs/postln/tinyllama_60m_postln.yaml

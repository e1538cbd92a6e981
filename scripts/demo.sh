#!/usr/bin/env bash
# The embedded default (`make demo`): on an offline CPU machine, build the embedded shards if they are
# missing, train the cpu scale (configs/cpu/base.yaml, where its schedule lives) with softmax attention
# and with sigmoid attention without normalisation, then KV-bias if the time budget still allows it,
# evaluate each and print the paper-style table (Sink_1, Sink*, valid loss) with PNG plots.
#
#   bash scripts/demo.sh                 # the full demo, checkpoints/demo_cpu_report/ holds the table
#   DEMO_SMOKE=1 bash scripts/demo.sh    # the same pipeline with a handful of steps (CI)
#
# DEMO_BUDGET_MINUTES (default 20) bounds the whole run; the optional run starts only if the previous
# run's duration still fits. DATA_DIR, PROBE_FILE, CHECKPOINT_ROOT, TRAIN_ARGS as in scripts/lib.sh.
SCALE=cpu
NUMBER_OF_GPUS=1
NUM_NODES=1
if [ "${DEMO_SMOKE:-0}" = 1 ]; then
    MAX_STEPS="${MAX_STEPS:-3}"
    CHECKPOINT_ROOT="${CHECKPOINT_ROOT:-checkpoints/demo_smoke}"
    export MAX_STEPS
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
FILL_DOCS=0
budget=$(( ${DEMO_BUDGET_MINUTES:-20} * 60 ))

"$PYTHON" scripts/experiment.py data --scale cpu --build true --probe_file "$PROBE_FILE" ${DATA_DIR:+--folder "$DATA_DIR"}

run_experiment softmax demo configs/tinyllama_60m.yaml
started=$SECONDS
run_experiment sigmoid_no_norm demo configs/attnsim/tinyllama_60m_sim_sigmoid_no_norm.yaml
last=$(( SECONDS - started ))
if [ $(( SECONDS + last )) -le "$budget" ]; then
    run_experiment kv_bias demo configs/kv_bias/tinyllama_60m_kv_bias.yaml
else
    echo "Skipping the KV-bias run: ${SECONDS}s used, another run takes ~${last}s of the ${budget}s budget."
fi

report="$CHECKPOINT_ROOT/demo_cpu_report"
echo
echo "=== Attention sink at the cpu scale (${SECONDS}s end to end)"
cat "$report/report.md"
echo
echo "Plots: $report/report.png and $CHECKPOINT_ROOT/*_cpu/plots/*.png"

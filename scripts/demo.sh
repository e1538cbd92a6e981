#!/usr/bin/env bash
# The embedded default (`make demo`): on an offline CPU machine, build the embedded shards if they are
# missing, train the cpu scale (configs/cpu/base.yaml, where its schedule lives) with softmax attention,
# sigmoid attention without normalisation and learned key/value biases (k*, v*), all three at once,
# evaluate each and print the paper-style table (Sink_1, Sink*, valid loss) with PNG plots.
#
#   bash scripts/demo.sh                 # the full demo, checkpoints/demo_cpu_report/ holds the table
#   DEMO_SMOKE=1 bash scripts/demo.sh    # the same pipeline with a handful of steps (CI)
#
# The runs train concurrently with `cores / 3` threads each (at least 1): on 2 cores three one-thread
# runs side by side get more tokens through than one two-thread run after another (scripts/cpu_scale.md
# has the measurements). DEMO_CORES overrides the core count; DATA_DIR, PROBE_FILE, CHECKPOINT_ROOT,
# TRAIN_ARGS as in scripts/lib.sh.
SCALE=cpu
NUMBER_OF_GPUS=1
NUM_NODES=1
if [ "${DEMO_SMOKE:-0}" = 1 ]; then
    MAX_STEPS="${MAX_STEPS:-3}"
    CHECKPOINT_ROOT="${CHECKPOINT_ROOT:-checkpoints/demo_smoke}"
    export MAX_STEPS
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
refuse_arguments "$@"
FILL_DOCS=0
cores="${DEMO_CORES:-$(nproc)}"
if ! [[ "$cores" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: DEMO_CORES must be a positive number of cores, got '$cores'" >&2
    exit 2
fi

"$PYTHON" scripts/sweep.py data --scale cpu --build true --probe_file "$PROBE_FILE" ${DATA_DIR:+--folder "$DATA_DIR"}

names=(softmax sigmoid_no_norm kv_bias)
configs=(configs/tinyllama_60m.yaml configs/attnsim/tinyllama_60m_sim_sigmoid_no_norm.yaml
         configs/kv_bias/tinyllama_60m_kv_bias.yaml)
threads=$(( cores / ${#names[@]} ))
[ "$threads" -ge 1 ] || threads=1

# The machine's fp32 matmul peak, measured before the runs start: the demo's time follows it (README.md).
# Each run's MFU and time estimate are against its share of it.
peak="$("$PYTHON" scripts/sweep.py peak)"
share="$(awk -v t="$threads" -v c="$cores" -v n="${#names[@]}" 'BEGIN { print t / (c > n * t ? c : n * t) }')"
PEAK_FLOPS="$(awk -v p="$peak" -v s="$share" 'BEGIN { printf "%.4g", p * s }')"
awk -v p="$peak" -v c="$cores" 'BEGIN { printf "fp32 matmul peak of this machine: %.0f GFLOP/s on %d core(s). The full demo took 17.9 min at 214 GFLOP/s and 23.5-26.0 min at 180-185 GFLOP/s (README.md); an ETA follows once the first steps are timed.\n", p / 1e9, c }'
echo "Training ${names[*]} concurrently, $threads thread(s) each, on $cores core(s)."

# The runs' lines also go to a progress log, from which the ETA is worked out. Filters ignore SIGTERM and
# SIGINT: they end when their trainer does, after passing on its last lines.
progress="$CHECKPOINT_ROOT/demo_progress.log"
mkdir -p "$CHECKPOINT_ROOT"
: > "$progress"
run_done="[demo] training done"
"$PYTHON" scripts/sweep.py eta --log "$progress" --runs "${#names[@]}" --peak_flops "$peak" --share "$share" \
    --parent $$ --stop_line "$run_done" &
eta_pid=$!
pids=()
for i in "${!names[@]}"; do
    # Each run's lines carry its name; a progress bar would not survive the interleaving.
    ( OMP_NUM_THREADS="$threads" PEAK_FLOPS="$PEAK_FLOPS" \
        TRAIN_ARGS="--log_step_interval 10 ${TRAIN_ARGS:-} --progress_bar false" \
        train_experiment "${names[$i]}" demo "${configs[$i]}" 2>&1 \
        | (trap '' INT TERM; exec sed -u "s/^/[${names[$i]}] /") | (trap '' INT TERM; exec tee -a "$progress") ) &
    pids+=("$!")
done
for i in "${!names[@]}"; do
    if ! wait "${pids[$i]}"; then
        echo "error: the ${names[$i]} run failed; its lines above carry the prefix [${names[$i]}]" >&2
        stop_children 1
    fi
done
echo "$run_done" >> "$progress"
wait "$eta_pid"
echo "Trained all runs in ${SECONDS}s."

for name in "${names[@]}"; do
    evaluate_experiment "$name" demo
done

report="$CHECKPOINT_ROOT/demo_cpu_report"
echo
echo "=== Attention sink at the cpu scale (${SECONDS}s end to end)"
cat "$report/report.md"
echo
echo "The paper at 60M parameters and 5B tokens (docs/reference.md): softmax Sink_1 18.18%; sigmoid without"
echo "normalisation Sink_1 0.44%; KV-bias Sink* 74.12% with Sink_1 0.00%."
echo "Plots: $report/report.png and $CHECKPOINT_ROOT/*_cpu/plots/*.png"

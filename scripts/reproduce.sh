#!/usr/bin/env bash
# The reproduction grid (docs/reproduction.md): the rows of the paper's ablation tables where it reports
# large effects, and four sink designs of neighbouring work, on one schedule (the scale's base.yaml; the
# grid itself is `lit_gpt/reporting/reproduction.py`). Each run is trained, evaluated with the sink costs
# (`sink-eval --costs true` into its sink_eval.json) and the tables are built from every finished run.
#
#   bash scripts/reproduce.sh                          # the cpu scale: 22 runs, ~5 h on an idle 2-core machine
#   ROWS="softmax kv_bias" bash scripts/reproduce.sh   # some rows of the grid (a row trains each of its seeds)
#   FILL_DOCS=1 bash scripts/reproduce.sh              # also write the tables into docs/reproduction.md
#   REPRODUCE_SMOKE=1 bash scripts/reproduce.sh        # the same pipeline, two rows of a few steps (CI)
#   SCALE=paper bash scripts/reproduce.sh              # the paper's setup, on GPUs, one run at a time
#
# It runs in pieces: a finished run (its newest checkpoint at the last step, evaluated) is skipped, an
# interrupted one resumes from its newest checkpoint (`--resume auto`), so stop it at any time and start
# it again. At the cpu scale REPRODUCE_JOBS runs (default 3) train at once with `cores / jobs` threads
# each, as scripts/demo.sh does; at the paper scale one run at a time takes every GPU. Each run's lines
# carry its name. The tables go to $CHECKPOINT_ROOT/reproduction_<scale>.md.
#
# Environment: ROWS, REPRODUCE_JOBS, REPRODUCE_CORES (default: nproc); SCALE, DATA_DIR, PROBE_FILE,
# CHECKPOINT_ROOT, MAX_STEPS, TRAIN_ARGS, FILL_DOCS as in scripts/lib.sh (smoke runs never fill the doc).
if [ "${REPRODUCE_SMOKE:-0}" = 1 ]; then
    SCALE="${SCALE:-cpu}"
    MAX_STEPS="${MAX_STEPS:-2}"
    CHECKPOINT_ROOT="${CHECKPOINT_ROOT:-checkpoints/reproduce_smoke}"
    ROWS="${ROWS:-softmax kv_bias}"
    export MAX_STEPS
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
refuse_arguments "$@"

if [ "$SCALE" = paper ]; then default_jobs=1; else default_jobs=3; fi
jobs="${REPRODUCE_JOBS:-$default_jobs}"
cores="${REPRODUCE_CORES:-$(nproc)}"
for var in jobs cores; do
    if ! [[ "${!var}" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: REPRODUCE_${var^^} must be a positive number, got '${!var}'" >&2
        exit 2
    fi
done
threads=$(( cores / jobs ))
[ "$threads" -ge 1 ] || threads=1

if [ "$SCALE" != paper ]; then
    run_child "$PYTHON" scripts/sweep.py data --scale "$SCALE" --build true --probe_file "$PROBE_FILE" \
        ${DATA_DIR:+--folder "$DATA_DIR"}
fi

# What the runs ran on, for the doc's table of runs.
machine() {
    local cpu gpu
    cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//' || true)"
    gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)"
    echo "$(nproc) cores${cpu:+ $cpu}${gpu:+, $NUMBER_OF_GPUS x $gpu}"
}
MACHINE="$(machine)"

# note_time RUN_DIR STARTED: add this piece's training seconds to the run's train_times.tsv.
note_time() {
    if [ -d "$1" ]; then
        printf '%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$((SECONDS - $2))" "$MACHINE" >> "$1/train_times.tsv"
    fi
}

# reproduce_run RUN CONFIG SEED STATE: train (or resume) the run, note how long this piece took, evaluate it;
# a run in state `evaluate` (trained to its last step, its evaluation missing or of an older format) is only
# evaluated, so its train_times.tsv keeps the pieces that trained it.
# Runs in a subshell of its own (a pipeline's), so its EXIT trap notes the time of a piece that failed or
# was stopped too (the trainer gets the stop signal itself, from stop_children, and saves its step).
reproduce_run() {
    local run="$1" config="$2" seed="$3" state="$4" checkpoint
    run_dir="$CHECKPOINT_ROOT/$(run_name "$run")"
    trap 'exit 143' TERM
    trap 'exit 130' INT
    if [ "$state" != evaluate ]; then
        started=$SECONDS
        trap 'note_time "$run_dir" "$started"' EXIT
        train_experiment "$run" reproduce "$config" --seed "$seed"
        note_time "$run_dir" "$started"
        trap - EXIT
    fi
    checkpoint="$("$PYTHON" scripts/sweep.py latest --run_dir "$run_dir")"
    run_child "$PYTHON" pretrain/eval_sink_pretrain.py --load_from "$checkpoint" --probe "$PROBE_FILE" --costs true \
        --json "$run_dir/sink_eval.json" --plots "$run_dir/plots"
}

read -ra rows <<< "${ROWS:-}"
rows_flag=()
if [ "${#rows[@]}" -gt 0 ]; then rows_flag=(--rows "[$(IFS=,; echo "${rows[*]}")]"); fi
plan="$(run_child "$PYTHON" scripts/reproduce.py plan --checkpoint_root "$CHECKPOINT_ROOT" --scale "$SCALE" \
    "${rows_flag[@]}" ${MAX_STEPS:+--max_step "$MAX_STEPS"})"

declare -A running=()
failed=()
# Wait until one of the running runs ends; remember it when it failed.
wait_for_one() {
    local pid status=0
    wait -n -p pid "${!running[@]}" || status=$?
    if [ "$status" != 0 ]; then failed+=("${running[$pid]}"); fi
    unset "running[$pid]"
}

todo=0
while read -r run config seed state; do
    if [ "$state" = done ]; then
        echo "skip $(run_name "$run"): finished and evaluated"
        continue
    fi
    todo=$((todo + 1))
    while [ "${#running[@]}" -ge "$jobs" ]; do wait_for_one; done
    # Filters ignore SIGTERM and SIGINT: they end when their trainer does, after passing on its last lines.
    ( if [ "$SCALE" != paper ]; then export OMP_NUM_THREADS="$threads"; fi
      TRAIN_ARGS="${TRAIN_ARGS:-} --progress_bar false" reproduce_run "$run" "$config" "$seed" "$state" 2>&1 \
        | (trap '' INT TERM; exec sed -u "s/^/[$run] /") ) &
    running[$!]="$run"
done <<< "$plan"
while [ "${#running[@]}" -gt 0 ]; do wait_for_one; done
echo "Ran $todo run(s) in ${SECONDS}s, $jobs at a time."

doc_flags=(--out "$CHECKPOINT_ROOT/reproduction_$SCALE.md")
if [ "$FILL_DOCS" = 1 ] && [ -z "${MAX_STEPS:-}" ]; then doc_flags+=(--doc docs/reproduction.md); fi
run_child "$PYTHON" scripts/reproduce.py doc --checkpoint_root "$CHECKPOINT_ROOT" --scale "$SCALE" \
    ${MAX_STEPS:+--max_step "$MAX_STEPS"} "${doc_flags[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "error: ${failed[*]} failed (their lines above carry their names); start the script again to resume them" >&2
    exit 1
fi

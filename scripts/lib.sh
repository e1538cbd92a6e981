# Shared by every script of scripts/: `run_experiment NAME SWEEP CONFIG [trainer flags...]` trains one
# run, evaluates its newest checkpoint and refreshes the sweep's report; `train_experiment` and
# `evaluate_experiment` are its two halves (scripts/demo.sh trains its runs concurrently with the first).
# Source it; do not run it.
#
# Environment (all optional):
#   SCALE            paper (the paper's setup; default when a GPU is visible) or cpu (tiny preset on the
#                    embedded corpus; default otherwise). See configs/cpu/base.yaml.
#   NUMBER_OF_GPUS   devices per node (default: visible GPUs, 1 on CPU); NUM_NODES (default 1),
#                    NODE_RANK (0), MAIN_ADDRESS (127.0.0.1) for multi-node `fabric run`.
#   DATA_DIR         shards folder (default datasets/hub for paper, datasets/embedded for cpu).
#   PROBE_FILE       probe set of the sink metric (default datasets/probe_valid.jsonl).
#   CHECKPOINT_ROOT  parent of the run folders (default checkpoints).
#   MAX_STEPS        cut every run short (smoke tests); such runs leave the docs' result tables alone.
#   TRAIN_ARGS       extra flags for pretrain/tinyllama.py, e.g. "--eval_iters 2".
#   FILL_DOCS        1 (default) writes each sweep's table into the results block of RESULTS_DOC (set by
#                    each script to its scripts/<family>.md); 0 does not.
#   WANDB_PROJECT, WANDB_ENTITY, WANDB_API_KEY   read by wandb (paper scale logs there; offline
#                    without a key). WANDB_NAME is set to the run name.

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"

gpu_count() {
    "$PYTHON" -c "import torch; print(torch.cuda.device_count())"
}

if [ -z "${SCALE:-}" ]; then
    if [ "$(gpu_count)" -gt 0 ]; then SCALE=paper; else SCALE=cpu; fi
fi
if [ -z "${NUMBER_OF_GPUS:-}" ]; then
    NUMBER_OF_GPUS="$(gpu_count)"
    [ "$NUMBER_OF_GPUS" -gt 0 ] || NUMBER_OF_GPUS=1
fi
NUM_NODES="${NUM_NODES:-1}"
PROBE_FILE="${PROBE_FILE:-datasets/probe_valid.jsonl}"
CHECKPOINT_ROOT="${CHECKPOINT_ROOT:-checkpoints}"
FILL_DOCS="${FILL_DOCS:-1}"
export SCALE NUMBER_OF_GPUS NUM_NODES PROBE_FILE CHECKPOINT_ROOT

# Run folder of NAME at the current scale: the upstream name at paper scale, NAME_<scale> otherwise.
run_name() {
    if [ "$SCALE" = paper ]; then echo "$1"; else echo "$1_$SCALE"; fi
}

# The trainer command: one process on a single device, `fabric run` for several devices or nodes.
launch() {
    if [ "$NUMBER_OF_GPUS" -gt 1 ] || [ "$NUM_NODES" -gt 1 ]; then
        "$REPO_ROOT/.venv/bin/fabric" run --node-rank="${NODE_RANK:-0}" --main-address="${MAIN_ADDRESS:-127.0.0.1}" \
            --accelerator=cuda --num-nodes="$NUM_NODES" --devices="$NUMBER_OF_GPUS" pretrain/tinyllama.py "$@"
    else
        "$PYTHON" pretrain/tinyllama.py "$@"
    fi
}

# run_experiment NAME SWEEP CONFIG [trainer flags...]
#   train CONFIG (composed at $SCALE) into $CHECKPOINT_ROOT/<run name>, resuming if it was interrupted;
#   evaluate the newest checkpoint into sink_eval.json and plots/ of the run folder; rebuild the report of
#   SWEEP over every run it has seen, in $CHECKPOINT_ROOT/<SWEEP[_scale]>_report/.
run_experiment() {
    train_experiment "$@"
    evaluate_experiment "$1" "$2"
}

# train_experiment NAME SWEEP CONFIG [trainer flags...]: the training half of run_experiment. Runs of
# different names may train at the same time (scripts/demo.sh does); evaluate them one after another.
train_experiment() {
    local name="$1" config="$3"
    shift 3
    local out_name run_dir
    out_name="$(run_name "$name")"
    run_dir="$CHECKPOINT_ROOT/$out_name"
    echo "=== $out_name: $config at scale $SCALE"

    "$PYTHON" scripts/experiment.py compose --yaml "$config" --scale "$SCALE" --out "$run_dir/run.yaml" \
        --probe_file "$PROBE_FILE" ${DATA_DIR:+--data "$DATA_DIR"}

    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
    WANDB_NAME="$out_name" launch --config "$run_dir/run.yaml" --out_name "$out_name" \
        --checkpoint_root "$CHECKPOINT_ROOT" --devices "$NUMBER_OF_GPUS" --num_nodes "$NUM_NODES" --resume auto \
        ${MAX_STEPS:+--max_step "$MAX_STEPS"} ${TRAIN_ARGS:-} "$@"
}

# evaluate_experiment NAME SWEEP: the evaluation half of run_experiment, for a run trained already.
evaluate_experiment() {
    local name="$1" sweep="$2"
    local run_dir report_dir checkpoint
    run_dir="$CHECKPOINT_ROOT/$(run_name "$name")"
    report_dir="$CHECKPOINT_ROOT/$(run_name "$sweep")_report"
    checkpoint="$("$PYTHON" scripts/experiment.py latest --run_dir "$run_dir")"
    "$PYTHON" pretrain/eval_sink_pretrain.py --load_from "$checkpoint" --probe "$PROBE_FILE" \
        --json "$run_dir/sink_eval.json" --plots "$run_dir/plots"

    mkdir -p "$report_dir"
    grep -qxF "$run_dir" "$report_dir/runs.txt" 2>/dev/null || echo "$run_dir" >> "$report_dir/runs.txt"
    local runs=()
    mapfile -t runs < "$report_dir/runs.txt"
    "$PYTHON" pretrain/report.py "${runs[@]}" --probe "$PROBE_FILE" --out "$report_dir"
    if [ "$FILL_DOCS" = 1 ] && [ -z "${MAX_STEPS:-}" ] && [ -n "${RESULTS_DOC:-}" ]; then
        "$PYTHON" scripts/experiment.py fill --doc "$RESULTS_DOC" --key "$sweep $SCALE" --table "$report_dir/report.md"
    fi
}

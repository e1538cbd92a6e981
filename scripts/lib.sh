# Shared by every script of scripts/: `run_experiment NAME SWEEP CONFIG [trainer flags...]` trains one
# run, evaluates its newest checkpoint and refreshes the sweep's report; `train_experiment` and
# `evaluate_experiment` are its two halves (scripts/demo.sh trains its runs concurrently with the first).
# Source it; do not run it.
#
# At a scale other than paper each run is a stand-in (the tiny preset at the cpu scale): before it starts,
# it says what it trains instead of the paper's run, at what size, and about how long it takes here.
# SIGTERM or Ctrl-C stops a script and everything it started: the signal is passed on to each process
# below the script (a trainer saves its current step first) and the script waits for them to end.
#
# Environment (all optional):
#   SCALE            paper (the paper's setup; default when a GPU is visible) or cpu (tiny preset on the
#                    embedded corpus; default otherwise). See configs/cpu/base.yaml.
#   NUMBER_OF_GPUS   processes per node, one per device (default: visible GPUs, 1 on CPU; set 2 or more on
#                    a CPU machine for that many CPU processes). Above 1, or with NUM_NODES above 1, the
#                    trainer starts through `fabric run` (torchrun underneath) on the devices the trainer
#                    picks itself: the GPUs when any are visible, the CPU otherwise.
#   NUM_NODES        machines in the run (default 1). Start the same script on every node, each with
#   NODE_RANK        its own index 0 .. NUM_NODES-1 (default 0; node 0 hosts the rendezvous),
#   MAIN_ADDRESS     the address of node 0 as the other nodes reach it (default 127.0.0.1; required
#                    with NUM_NODES above 1), and
#   MAIN_PORT        a free TCP port on node 0 (default 29400).
#                    CHECKPOINT_ROOT must be a folder every node sees: rank 0 writes the checkpoints and
#                    every process reads them on resume. Only node 0 evaluates and writes reports.
#                    Two nodes of 8 GPUs, sharded (TRAIN_ARGS="--strategy fsdp"; ddp without it):
#                      node 0: NUM_NODES=2 NODE_RANK=0 MAIN_ADDRESS=10.0.0.1 bash scripts/run_default.sh
#                      node 1: NUM_NODES=2 NODE_RANK=1 MAIN_ADDRESS=10.0.0.1 bash scripts/run_default.sh
#                    `launch_command ARGS...; printf '%s\n' "${LAUNCH_CMD[@]}"` shows a node's command.
#   DATA_DIR         shards folder (default datasets/hub for paper, datasets/embedded for cpu).
#   PROBE_FILE       probe set of the sink metric (default datasets/probe_valid.jsonl).
#   CHECKPOINT_ROOT  parent of the run folders (default checkpoints).
#   MAX_STEPS        a smoke run: every run stops after MAX_STEPS steps, without torch.compile and with one
#                    evaluation batch (--compile false --eval_iters 1, which TRAIN_ARGS can override): at the
#                    cpu scale its training ends ~25 s after start-up, its evaluation and report ~45 s later
#                    (bench/smoke.py times one; bench/README.md).
#   TRAIN_ARGS       extra flags for pretrain/tinyllama.py, e.g. "--eval_iters 2". The scripts themselves
#                    take only the values they sweep; a flag given to a script is refused (exit 2).
#   PEAK_FLOPS       FLOP/s of one device for MFU and the stand-in's time estimate (default: measured).
#   FILL_DOCS        1 writes each sweep's table into the results block of RESULTS_DOC (set by each script
#                    to its tracked scripts/<family>.md); 0 (default) leaves the docs alone. Smoke runs
#                    (MAX_STEPS) never write there.
#   WANDB_PROJECT, WANDB_ENTITY, WANDB_API_KEY   read by wandb (every scale logs there; offline
#                    without a key, into <run folder>/logs/wandb). Each run is named after its folder
#                    (WANDB_NAME), grouped by its sweep (WANDB_RUN_GROUP, default SWEEP[_scale]) and tagged
#                    scale:<SCALE> besides the tags of its attention variant (WANDB_TAGS adds more).
#   REPORT_WANDB     1 also logs each sweep report's table and chart to a wandb run in the report folder.

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"

gpu_count() {
    "$PYTHON" -c "import torch; print(torch.cuda.device_count())"
}

# `refuse_flags "$@"` ends a script (exit 2) when one of the sweep values it was given is a flag: the
# scripts take no flags, trainer flags go in TRAIN_ARGS.
refuse_flags() {
    local index
    for ((index = 1; index <= $#; index++)); do
        if [[ "${!index}" == -* ]]; then refuse_extra "flags" "${@:index}"; fi
    done
}

# `refuse_arguments "$@"` ends a script that sweeps nothing (exit 2) when it was given any argument.
refuse_arguments() {
    if [ "$#" -gt 0 ]; then refuse_extra "arguments" "$@"; fi
}

refuse_extra() {
    local what="$1"
    shift
    echo "error: $0 takes no $what, got '$*'; pass trainer flags in TRAIN_ARGS (TRAIN_ARGS=\"$*\"), or MAX_STEPS=N for a smoke run" >&2
    exit 2
}

# The processes the shell PID started and, through its subshells, theirs: the subshells and the commands
# the script ran. A command's own children are its business (a trainer ends its data loaders and its wandb
# service, `fabric run` its workers), so they are not signalled behind its back.
started_by() {
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null || true); do
        echo "$child"
        if [ "$(ps -o comm= -p "$child" 2>/dev/null || true)" = bash ]; then started_by "$child"; fi
    done
}

# stop_children STATUS: send SIGTERM to every process this script started, wait until each has ended (a
# trainer finishes its step and saves), then exit with STATUS. A foreground command would make the trap
# wait for it first, so the scripts run their commands through `run_child`.
stop_children() {
    trap - TERM INT
    local pids pid state
    pids="$(started_by $$)"
    for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in $pids; do
        while state="$(ps -o stat= -p "$pid" 2>/dev/null)" && [[ "$state" != Z* ]]; do sleep 0.2; done
    done
    exit "$1"
}
trap 'stop_children 143' TERM
trap 'stop_children 130' INT

# run_child COMMAND...: run COMMAND in the background and wait for it, so that a signal reaches the trap at
# once; returns COMMAND's status.
run_child() {
    "$@" &
    wait "$!"
}

if [ -z "${SCALE:-}" ]; then
    if [ "$(gpu_count)" -gt 0 ]; then
        SCALE=paper
    else
        SCALE=cpu
        echo "No GPU visible: SCALE=cpu trains a small stand-in of each run (configs/cpu/base.yaml); set SCALE=paper for the paper's setup."
    fi
fi
if [ -z "${NUMBER_OF_GPUS:-}" ]; then
    NUMBER_OF_GPUS="$(gpu_count)"
    [ "$NUMBER_OF_GPUS" -gt 0 ] || NUMBER_OF_GPUS=1
fi
NUM_NODES="${NUM_NODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MAIN_PORT="${MAIN_PORT:-29400}"
for var in NUMBER_OF_GPUS NUM_NODES MAIN_PORT; do
    if ! [[ "${!var}" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: $var must be a positive number, got '${!var}'" >&2
        exit 2
    fi
done
if ! [[ "$NODE_RANK" =~ ^[0-9]+$ ]] || [ "$NODE_RANK" -ge "$NUM_NODES" ]; then
    echo "error: NODE_RANK must be in 0 .. $((NUM_NODES - 1)) with NUM_NODES=$NUM_NODES, got '$NODE_RANK'" >&2
    exit 2
fi
if [ "$NUM_NODES" -gt 1 ] && [ -z "${MAIN_ADDRESS:-}" ]; then
    echo "error: NUM_NODES=$NUM_NODES needs MAIN_ADDRESS, the address of node 0 as the other nodes reach it" >&2
    exit 2
fi
MAIN_ADDRESS="${MAIN_ADDRESS:-127.0.0.1}"
PROBE_FILE="${PROBE_FILE:-datasets/probe_valid.jsonl}"
CHECKPOINT_ROOT="${CHECKPOINT_ROOT:-checkpoints}"
FILL_DOCS="${FILL_DOCS:-0}"
export SCALE NUMBER_OF_GPUS NUM_NODES PROBE_FILE CHECKPOINT_ROOT

# Run folder of NAME at the current scale: the upstream name at paper scale, NAME_<scale> otherwise.
run_name() {
    if [ "$SCALE" = paper ]; then echo "$1"; else echo "$1_$SCALE"; fi
}

# launch_command [trainer flags...]: this node's trainer command, into the array LAUNCH_CMD: one process
# on a single device, `fabric run` for several devices or nodes. No --accelerator: `fabric run` and the
# trainer both take the GPUs when any are visible and the CPU otherwise, so they always agree.
launch_command() {
    if [ "$NUMBER_OF_GPUS" -gt 1 ] || [ "$NUM_NODES" -gt 1 ]; then
        # `python -m lightning.fabric.cli` is `fabric run` of the interpreter the scripts use. Without `--` it
        # would take the trainer's flags that share its option names (--devices, --num_nodes, --strategy,
        # --precision) for its own and never pass them on.
        LAUNCH_CMD=("$PYTHON" -m lightning.fabric.cli --devices="$NUMBER_OF_GPUS" --num-nodes="$NUM_NODES"
                    --node-rank="$NODE_RANK" --main-address="$MAIN_ADDRESS" --main-port="$MAIN_PORT"
                    -- pretrain/tinyllama.py "$@")
    else
        LAUNCH_CMD=("$PYTHON" pretrain/tinyllama.py "$@")
    fi
}

# launch [trainer flags...]: run this node's trainer command.
launch() {
    launch_command "$@"
    run_child "${LAUNCH_CMD[@]}"
}

# run_experiment NAME SWEEP CONFIG [trainer flags...]
#   train CONFIG (composed at $SCALE) into $CHECKPOINT_ROOT/<run name>, resuming if it was interrupted;
#   evaluate the newest checkpoint into sink_eval.json and plots/ of the run folder; rebuild the report of
#   SWEEP over every run it has seen (report.md, .csv, .png, .html), in $CHECKPOINT_ROOT/<SWEEP[_scale]>_report/.
run_experiment() {
    train_experiment "$@"
    # The other nodes of a multi-node run only train: node 0 holds rank 0, which writes the checkpoints.
    if [ "$NODE_RANK" = 0 ]; then evaluate_experiment "$1" "$2"; fi
}

# train_experiment NAME SWEEP CONFIG [trainer flags...]: the training half of run_experiment. Runs of
# different names may train at the same time (scripts/demo.sh does); evaluate them one after another.
train_experiment() {
    local name="$1" sweep="$2" config="$3"
    shift 3
    local out_name run_dir
    out_name="$(run_name "$name")"
    run_dir="$CHECKPOINT_ROOT/$out_name"
    echo "=== $out_name: $config at scale $SCALE"

    run_child "$PYTHON" scripts/sweep.py compose --yaml "$config" --scale "$SCALE" --out "$run_dir/run.yaml" \
        --probe_file "$PROBE_FILE" ${DATA_DIR:+--data "$DATA_DIR"} ${PEAK_FLOPS:+--peak_flops "$PEAK_FLOPS"} \
        ${MAX_STEPS:+--max_step "$MAX_STEPS"}

    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
    WANDB_NAME="$out_name" WANDB_RUN_GROUP="${WANDB_RUN_GROUP:-$(run_name "$sweep")}" \
        WANDB_TAGS="scale:$SCALE${WANDB_TAGS:+,$WANDB_TAGS}" launch --config "$run_dir/run.yaml" --out_name "$out_name" \
        --checkpoint_root "$CHECKPOINT_ROOT" --devices "$NUMBER_OF_GPUS" --num_nodes "$NUM_NODES" --resume auto \
        ${PEAK_FLOPS:+--peak_flops "$PEAK_FLOPS"} $(smoke_flags) ${TRAIN_ARGS:-} "$@"
}

# The trainer flags of a smoke run (MAX_STEPS set): few steps, no compilation, one evaluation batch.
smoke_flags() {
    if [ -n "${MAX_STEPS:-}" ]; then echo "--max_step $MAX_STEPS --compile false --eval_iters 1"; fi
}

# evaluate_experiment NAME SWEEP: the evaluation half of run_experiment, for a run trained already.
evaluate_experiment() {
    local name="$1" sweep="$2"
    local run_dir report_dir checkpoint
    run_dir="$CHECKPOINT_ROOT/$(run_name "$name")"
    report_dir="$CHECKPOINT_ROOT/$(run_name "$sweep")_report"
    checkpoint="$("$PYTHON" scripts/sweep.py latest --run_dir "$run_dir")"
    run_child "$PYTHON" pretrain/eval_sink_pretrain.py --load_from "$checkpoint" --probe "$PROBE_FILE" \
        --json "$run_dir/sink_eval.json" --plots "$run_dir/plots"

    mkdir -p "$report_dir"
    grep -qxF "$run_dir" "$report_dir/runs.txt" 2>/dev/null || echo "$run_dir" >> "$report_dir/runs.txt"
    local runs=()
    mapfile -t runs < "$report_dir/runs.txt"
    local report_flags=()
    [ "${REPORT_WANDB:-0}" != 1 ] || report_flags+=(--wandb)
    run_child "$PYTHON" pretrain/report.py "${runs[@]}" \
        --probe "$PROBE_FILE" --out "$report_dir" --html "${report_flags[@]}"
    if [ "$FILL_DOCS" = 1 ] && [ -z "${MAX_STEPS:-}" ] && [ -n "${RESULTS_DOC:-}" ]; then
        run_child "$PYTHON" scripts/sweep.py fill --doc "$RESULTS_DOC" --key "$sweep $SCALE" --table "$report_dir/report.md"
    fi
}

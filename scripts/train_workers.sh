#!/usr/bin/env bash
# Data-parallel fairseq-train on N workers of one machine, through fairseq's own distributed path.
#   bash scripts/train_workers.sh N [--port P] [--threads T] -- DATA_BIN [fairseq-train args...]
# With --cpu among the arguments: N processes started here, one per --distributed-rank, joined by a
# gloo process group over tcp://127.0.0.1:P with --ddp-backend legacy_ddp and
# --distributed-no-spawn (fairseq's default c10d DDP asks for CUDA device ids, and its spawn path
# assumes GPUs: two CPU ranks without these flags exit 0 having trained nothing); each worker
# runs T threads (default: cores / N); rank 0 prints, rank i > 0 logs to SAVE_DIR/worker.i.log.
# Without --cpu: fairseq spawns one process per GPU itself (--distributed-world-size N).
# Batches are split over the workers, so --max-tokens is per worker.
set -euo pipefail
die() { echo "error: $*" >&2; exit 1; }

[[ $# -ge 1 ]] || die "usage: train_workers.sh N [--port P] [--threads T] -- DATA_BIN [fairseq-train args]"
N=$1
shift
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number of workers, got '$N'"
PORT=29500 THREADS=""
while [[ $# -gt 0 && "$1" != "--" ]]; do
  case "$1" in
    --port) [[ $# -ge 2 ]] || die "--port needs a value"; PORT=$2; shift 2 ;;
    --threads) [[ $# -ge 2 ]] || die "--threads needs a value"; THREADS=$2; shift 2 ;;
    *) die "unknown option $1 (options go before --, fairseq-train's after it)" ;;
  esac
done
[[ $# -ge 2 && "$1" == "--" ]] || die "give fairseq-train's arguments after --, the data-bin first"
shift
ARGS=("$@")
for a in "${ARGS[@]}"; do
  case "$a" in
    --distributed-world-size | --distributed-rank | --distributed-init-method | --distributed-port)
      die "$a is set by this launcher" ;;
  esac
done

cpu=0
save_dir=checkpoints
for ((i = 0; i < ${#ARGS[@]}; i++)); do
  [[ "${ARGS[i]}" == --cpu ]] && cpu=1
  [[ "${ARGS[i]}" == --save-dir ]] && save_dir=${ARGS[i + 1]:-checkpoints}
done

if [[ $cpu == 0 ]]; then
  exec fairseq-train "${ARGS[@]}" --distributed-world-size "$N"
fi

THREADS=${THREADS:-$(($(nproc) / N > 0 ? $(nproc) / N : 1))}
mkdir -p "$save_dir"
distributed=(--distributed-world-size "$N" --distributed-init-method "tcp://127.0.0.1:$PORT"
  --distributed-backend gloo --distributed-no-spawn --ddp-backend legacy_ddp)
pids=()
for ((rank = 1; rank < N; rank++)); do
  OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS fairseq-train "${ARGS[@]}" "${distributed[@]}" \
    --distributed-rank "$rank" >"$save_dir/worker.$rank.log" 2>&1 &
  pids+=($!)
done
status=0
OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS fairseq-train "${ARGS[@]}" "${distributed[@]}" \
  --distributed-rank 0 || status=$?
for ((i = 0; i < ${#pids[@]}; i++)); do
  wait "${pids[i]}" || { echo "error: worker $((i + 1)) failed: $save_dir/worker.$((i + 1)).log" >&2; status=1; }
done
exit $status

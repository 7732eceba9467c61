#!/usr/bin/env bash
# Issue B's GPU measurements in one command on a lent GPU machine that has python3 with a CUDA
# torch but no network and no fairseq (the device tool's nvidia-h200: Python 3.12, torch 2.11).
#
# Here, once (network; the trained checkpoint if there is one):
#   bash bench/device_check.sh prepare [--checkpoint CKPT] [--data data-bin/multi30k_de_en]
#       [--ref data-bin/multi30k_de_en_work/test.raw.en] [--python-version 3.12]
#   -> .device/ (in .gitignore): wheels of fairseq and of what the image
#      lacks, the data-bin, the raw test references, the checkpoint without its optimizer state
#      (~54 MB with the Multi30k small model; the device tool carries at most 64 MiB). Without
#      --checkpoint, `run` times an untrained diffusion model of that size and skips BLEU.
# There, carrying .device (the device tool's `carry`):
#   bash bench/device_check.sh run --out "$OUT" [--sentences 64] [--precisions "fp16 fp32"]
#   -> $OUT/bleu-fp16.md (fairseq-generate on the test set, sacreBLEU, with its outputs),
#      $OUT/speed-<precision>.md (bench/decode_speed.py against fairseq's AR and CMLM), log.txt.
# `run --device cpu` does the same on a CPU (fp32): it checks the procedure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEVICE_DIR=$ROOT/.device
DEVICE_DATA=$DEVICE_DIR/data-bin DEVICE_CKPT=$DEVICE_DIR/checkpoint.pt DEVICE_REF=$DEVICE_DIR/test.ref
SETTINGS=("10 1 1" "20 3 3")  # K, length beam, noise beam of the BLEU check
die() { echo "device_check: $*" >&2; exit 2; }
need() { [ "$1" -ge 2 ] || die "$2 needs a value"; }  # need $# FLAG: the flag has its value

prepare() {
  local checkpoint="" data=$ROOT/data-bin/multi30k_de_en
  local ref=$ROOT/data-bin/multi30k_de_en_work/test.raw.en pyver=3.12
  while [ $# -gt 0 ]; do
    case $1 in
      --checkpoint) need $# "$1"; checkpoint=$2; shift 2 ;;
      --data) need $# "$1"; data=$2; shift 2 ;;
      --ref) need $# "$1"; ref=$2; shift 2 ;;
      --python-version) need $# "$1"; pyver=$2; shift 2 ;;
      *) die "prepare: unknown argument $1" ;;
    esac
  done
  [ -z "$checkpoint" ] || [ -f "$checkpoint" ] || die "prepare: no checkpoint $checkpoint"
  [ -f "$data/dict.en.txt" ] || die "prepare: no data-bin at $data (scripts/prepare_multi30k.sh)"
  [ -f "$ref" ] || die "prepare: no reference file $ref"
  rm -rf "$DEVICE_DIR" && mkdir -p "$DEVICE_DIR/wheels"
  # antlr4 4.9.3 (hydra-core's pin) exists only as an sdist: built here (pure Python)
  python3 -m pip wheel -q --no-deps -w "$DEVICE_DIR/wheels" antlr4-python3-runtime==4.9.3
  local platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do platforms+=(--platform "$p"); done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
    --implementation cp "${platforms[@]}" -d "$DEVICE_DIR/wheels" \
    ve-fairseq==0.12.3 bitarray==3.12.3 hydra-core==1.3.8 omegaconf==2.3.1 cffi==2.1.1 \
    sacremoses==0.2.0
  cp -r "$data" "$DEVICE_DATA"
  cp "$ref" "$DEVICE_REF"
  if [ -n "$checkpoint" ]; then
    "$ROOT/.venv/bin/python" -c "
import sys, torch
import diffusion_plugin.checkpoints  # allow-lists the globals fairseq stores
state = torch.load(sys.argv[1], map_location='cpu')
state.pop('last_optimizer_state', None)
torch.save(state, sys.argv[2])" "$checkpoint" "$DEVICE_CKPT"
  fi
  du -sh "$DEVICE_DIR"
  echo "carry .device and run: bash bench/device_check.sh run --out \"\$OUT\""
}

bleu() {  # the trained checkpoint on the whole test set: fp16 on a GPU, fp32 on a CPU
  local out=$1 device=$2
  local flags=(--fp16) tag=fp16
  [ "$device" = cpu ] && flags=(--cpu) tag=fp32
  local table=$out/bleu-$tag.md
  printf '| K | b | sacreBLEU | sentences/s (fairseq-generate, batch 100) |\n|---|---|---|---|\n' >"$table"
  for setting in "${SETTINGS[@]}"; do
    local steps b1 b2 gen score rate
    read -r steps b1 b2 <<<"$setting"
    gen=$out/generate-K$steps-b${b1}x$b2.txt
    python3 -m fairseq_cli.generate "$DEVICE_DATA" --user-dir diffusion_plugin --task diffusion_translation \
      --path "$DEVICE_CKPT" --gen-subset test --batch-size 100 --required-batch-size-multiple 1 \
      --remove-bpe --seed 1 --decoding-steps "$steps" --length-beam "$b1" --noise-beam "$b2" \
      "${flags[@]}" >"$gen" 2>/tmp/generate.log || { cat /tmp/generate.log; return 1; }
    score=$(python3 scripts/bleu.py "$gen" --ref "$DEVICE_REF" --detok en | sed -n 's/^BLEU = \([0-9.]*\).*/\1/p')
    rate=$(sed -n 's/.*(\([0-9.]*\) sentences\/s.*/\1/p' /tmp/generate.log | tail -1)
    echo "| $steps | ${b1}x$b2 | $score | $rate |" >>"$table"
  done
  cat "$table"
}

run() {
  local out="" sentences=64 precisions="fp16 fp32" device=cuda
  while [ $# -gt 0 ]; do
    case $1 in
      --out) need $# "$1"; out=$2; shift 2 ;;
      --sentences) need $# "$1"; sentences=$2; shift 2 ;;
      --precisions) need $# "$1"; precisions=$2; shift 2 ;;
      --device) need $# "$1"; device=$2; shift 2 ;;
      *) die "run: unknown argument $1" ;;
    esac
  done
  [ -n "$out" ] || die "run: --out DIR is required"
  case $device in cuda | cpu) ;; *) die "run: --device must be cuda or cpu, got $device" ;; esac
  [ -d "$DEVICE_DIR/wheels" ] || die "run: no $DEVICE_DIR/wheels (bench/device_check.sh prepare, then carry .device)"
  mkdir -p "$out"
  exec > >(tee -a "$out/log.txt") 2>&1
  if ! python3 -c "import fairseq" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
      "$DEVICE_DIR"/wheels/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
  cd "$ROOT"
  if [ "$device" = cuda ]; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; fi
  python3 -c "import torch, fairseq; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'fairseq', fairseq.__version__)"
  local diffusion=()
  if [ -f "$DEVICE_CKPT" ]; then
    diffusion=(--diffusion "$DEVICE_CKPT")
    bleu "$out" "$device"
  fi
  for precision in $precisions; do
    local flags=()
    case $precision in
      fp16) [ "$device" = cuda ] || continue; flags=(--fp16) ;;
      bf16) flags=(--bf16) ;;
    esac
    python3 bench/decode_speed.py --data "$DEVICE_DATA" "${diffusion[@]}" --init-untrained \
      --size small --device "$device" "${flags[@]}" --sentences "$sentences" --repeats 3 \
      --out "$out/speed-$precision.md"
  done
}

case ${1:-} in
  prepare) shift; prepare "$@" ;;
  run) shift; run "$@" ;;
  *) die "usage: bash bench/device_check.sh {prepare|run} ... (see the header of this file)" ;;
esac

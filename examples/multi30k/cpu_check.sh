#!/usr/bin/env bash
# Multi30k de->en on CPU: prepare (sacremoses + subword-nmt), train a small diffusion model for a
# wall-clock budget, decode the test set and score it with sacrebleu (detokenised) and tokenised BLEU.
#   bash examples/multi30k/cpu_check.sh RAW_DIR [MINUTES]     (RAW_DIR: {train,val,test}.{de,en})
# Re-running resumes training from WORK/checkpoints/checkpoint_last.pt up to the new budget.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RAW=${1:?usage: cpu_check.sh RAW_DIR [MINUTES]}
MINUTES=${2:-40}
WORK=${WORK:-$ROOT/work/multi30k}
TEXT=$WORK/text
source "$ROOT/scripts/setup_env.sh"
source "$ROOT/examples/multi30k/small_model.sh"

bash "$ROOT/scripts/prepare_multi30k.sh" --raw-dir "$RAW" --out "$WORK/data-bin" --work "$TEXT"

fairseq-train "$WORK/data-bin" "${SMALL_TRAIN[@]}" --save-dir "$WORK/checkpoints" \
  --stop-time-hours "$(python -c "print($MINUTES/60)")" --max-update 1000000

for beams in "1 1" "3 3"; do
  set -- $beams
  small_generate "$WORK/data-bin" "$WORK/checkpoints/checkpoint_last.pt" \
    "$WORK/generate.k20.b$1x$2.txt" 20 "$1" "$2"
done

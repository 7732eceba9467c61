#!/usr/bin/env bash
# Test BLEU of one diffusion checkpoint for K in {5,10,20} x b in {1x1,3x3} x candidate selection
# (score, bleu-mbr, and reranker when an AR checkpoint with the same dictionaries is given).
#   bash examples/multi30k/selection_table.sh DATA_BIN DIFF_CKPT RAW_REF [AR_CKPT] > table.md
# Generation logs go to ${WORK:-selection_table}/; sacrebleu on Moses-detokenised output (en).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${1:?usage: selection_table.sh DATA_BIN DIFF_CKPT RAW_REF [AR_CKPT]}
DIFF=${2:?diffusion checkpoint}
REF=${3:?raw reference file}
AR=${4:-}
WORK=${WORK:-selection_table}
mkdir -p "$WORK"
selections="score bleu-mbr${AR:+ reranker}"
echo "| K | b | selection | sacreBLEU | sentences/s |"
echo "|---|---|---|---|---|"
for k in 5 10 20; do
  for beams in "1 1" "3 3"; do
    set -- $beams
    for selection in $selections; do
      [[ $1 == 1 && $selection != score ]] && continue   # one candidate: nothing to select
      path=$DIFF; [[ $selection == reranker ]] && path=$DIFF:$AR
      out="$WORK/k$k.b$1x$2.$selection.txt"
      fairseq-generate "$DATA" --user-dir "$ROOT/diffusion_plugin" --task diffusion_translation \
        --path "$path" --gen-subset test --batch-size 128 --required-batch-size-multiple 1 \
        --remove-bpe --seed 1 --cpu --decoding-steps "$k" --length-beam "$1" --noise-beam "$2" \
        --candidate-selection "$selection" > "$out" 2> "$out.log"
      bleu=$(python "$ROOT/scripts/bleu.py" "$out" --ref "$REF" --detok en | sed -n 's/^BLEU = \([0-9.]*\).*/\1/p')
      rate=$(sed -n 's/.*(\([0-9.]*\) sentences\/s.*/\1/p' "$out.log")
      echo "| $k | $1x$2 | $selection | $bleu | $rate |"
    done
  done
done

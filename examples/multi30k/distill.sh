#!/usr/bin/env bash
# Sequence-level knowledge distillation on Multi30k de->en, measured: the bench's AR transformer
# (3+3 layers, width 256, bench/run.py's optimiser) as the teacher, the train split translated
# with beam 5, then the plugin's small model and fairseq's CMLM trained on the distilled data for
# the update budgets of their raw-data runs, decoded on the original test set and scored.
#   bash examples/multi30k/distill.sh teacher   (train the teacher, distil: scripts/distill.sh)
#   bash examples/multi30k/distill.sh plugin    (ablation.sh base on the distilled data-bin)
#   bash examples/multi30k/distill.sh cmlm      (bench/run.py --systems cmlm, each CMLM_UPDATES)
#   bash examples/multi30k/distill.sh table     (every finished result, as markdown)
# Environment: DATA (data-bin/multi30k_de_en, from scripts/prepare_multi30k.sh), TEXT (its work
# dir: test.raw.en), DISTILL (DATA_distill), OUT (work/multi30k_distill), TEACHER_UPDATES
# (630 = 5 epochs), SHARDS (2 translation processes), MAX_UPDATE (the plugin's, 1455 = 12 epochs),
# CMLM_UPDATES ("546 1455": each budget resumes from the previous one's checkpoint), THREADS (1
# for the students). Every stage resumes; pin a stage to a core with taskset -c N.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${DATA:-$ROOT/data-bin/multi30k_de_en}
TEXT=${TEXT:-${DATA}_work}
DISTILL=${DISTILL:-${DATA}_distill}
OUT=${OUT:-$ROOT/work/multi30k_distill}
SRC=${SRC:-de} TGT=${TGT:-en}
STAGE=${1:?usage: distill.sh teacher|plugin|cmlm|table}
cd "$ROOT"

case "$STAGE" in
  teacher)
    # the AR system of bench/run.py (decode_speed.untrained_flags("ar", small) + OPTIMISER)
    bash scripts/distill.sh --data-bin "$DATA" --src "$SRC" --tgt "$TGT" --out "$DISTILL" \
      --arch transformer --max-update "${TEACHER_UPDATES:-630}" --shards "${SHARDS:-2}" -- \
      --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 \
      --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 \
      --decoder-attention-heads 4 --dropout 0.1 --weight-decay 0.01 --clip-norm 1.0 --lr 1e-3 \
      --warmup-updates 500 --seed 1
    python scripts/bleu.py "${DISTILL}_work/test.gen" --ref "$TEXT/test.raw.$TGT" --detok "$TGT" |
      tee "$OUT.teacher.bleu.txt"
    ;;
  plugin)
    [[ -f "$DISTILL/train.$SRC-$TGT.$TGT.bin" ]] || { echo "error: no $DISTILL: run 'distill.sh teacher' first" >&2; exit 1; }
    # a snapshot at each CMLM budget below the plugin's (equal-update comparisons), then decoded
    snapshot=${CMLM_UPDATES:-546 1455}
    snapshot=${snapshot%% *}
    DATA=$DISTILL TEXT=$TEXT OUT=$OUT bash examples/multi30k/ablation.sh base \
      --save-interval-updates "$snapshot"
    ROOT=$ROOT source examples/multi30k/small_model.sh
    for ckpt in "$OUT"/base/checkpoints/checkpoint_*_"$snapshot".pt; do
      [[ -f "$ckpt" ]] || continue
      for k in 5 20; do
        small_generate "$DISTILL" "$ckpt" "$OUT/base/generate.$snapshot.k$k.txt" "$k" 1 1 |
          tee "$OUT/base/bleu.$snapshot.k$k.txt"
      done
    done
    ;;
  cmlm)
    [[ -f "$DISTILL/train.$SRC-$TGT.$TGT.bin" ]] || { echo "error: no $DISTILL: run 'distill.sh teacher' first" >&2; exit 1; }
    export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
    previous=""
    for updates in ${CMLM_UPDATES:-546 1455}; do
      run=$OUT/cmlm.$updates
      # a larger budget continues the previous one's training (inverse_sqrt does not depend on it)
      if [[ -n "$previous" && ! -d "$run/checkpoints" ]]; then
        mkdir -p "$run" && cp -r "$previous/checkpoints" "$run/"
      fi
      python bench/run.py --data "$DISTILL" --systems cmlm --max-update "$updates" \
        --stages train bleu --ref "$TEXT/test.raw.$TGT" --detok "$TGT" --out "$run" \
        --source-lang "$SRC" --target-lang "$TGT"
      previous=$run
    done
    ;;
  table)
    echo "| system | data | updates | decoding | tokenised BLEU | sacreBLEU |"
    echo "|---|---|---:|---|---:|---:|"
    [[ -f "$OUT.teacher.bleu.txt" ]] && echo "| AR teacher (beam 5) | raw | ${TEACHER_UPDATES:-630} | beam 5 |" \
      "$(grep -oE "BLEU4 = [0-9.]+" "${DISTILL}_work/test.gen" | cut -d' ' -f3) |" \
      "$(grep -oE "^BLEU = [0-9.]+" "$OUT.teacher.bleu.txt" | cut -d' ' -f3) |"
    for json in "$OUT"/cmlm.*/bleu.cmlm.json; do
      [[ -f "$json" ]] || continue
      python -c 'import json, sys
for setting, r in json.load(open(sys.argv[1])).items():
    print(f"| CMLM | distilled | {sys.argv[2]} | {setting} | {r[\"tok_bleu\"]} | {r.get(\"sacrebleu\")} |")' \
        "$json" "$(basename "$(dirname "$json")" | cut -d. -f2)"
    done
    [[ -f "$OUT/base/result.md" ]] && awk -F' *[|] *' \
      '{ printf "| plugin | distilled | %s | K=%s, E=%s, b=1x1 | %s | %s |\n", $3, $5, $6, $7, $8 }' \
      "$OUT/base/result.md"
    true
    ;;
  *) echo "error: unknown stage '$STAGE' (teacher, plugin, cmlm, table)" >&2; exit 1 ;;
esac

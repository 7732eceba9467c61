#!/usr/bin/env bash
# Where Difformer's full decoding setting loses to a plain chain (issue J), on the quickstart's
# synthetic pair: diffusion_transformer_tiny trained UPDATES updates at each training noise
# factor of FACTORS (--rescaling-factor: 1 = no rescaling, auto = DGS search, 3 = quickstart),
# then the test set decoded with the plain K=20 b=1x1 chain, Difformer's full setting (3x3
# beams, BLEU-MBR, DDIM eta 0.5, 5 early-stopping steps), that setting with one part at a time
# removed and each part alone, with and without the length predictor in the selection, each
# scored by bench/frontier.py (sacreBLEU, no speed).
#   bash bench/toy_inversion.sh            -> WORK/F*/inversion.md, one table per factor
# Environment: WORK (work/toy_inversion), UPDATES (600), FACTORS ("1 auto 3"), THREADS (1).
# Every stage resumes (data, a finished checkpoint, a finished table).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$ROOT/work/toy_inversion}
UPDATES=${UPDATES:-600}
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
mkdir -p "$WORK"
cd "$WORK"

if [[ ! -f data-bin/.done ]]; then
  python -m diffusion_plugin.synthetic raw --train 20000 --valid 300 --test 500 --seed 1
  rm -rf data-bin
  fairseq-preprocess --source-lang src --target-lang tgt --trainpref raw/train \
    --validpref raw/valid --testpref raw/test --destdir data-bin --joined-dictionary --workers 1 \
    > preprocess.log 2>&1
  touch data-bin/.done
fi

# name|decoding flags (frontier.py: sampler, K, beams, then --set FLAG=VALUE ...); λ: the
# generator's --length-score-weight (1, the default: the length predictor's log p(n|x) counts in
# the selection; 0: it does not, the generator before 2026-12-07)
FULL="--samplers ddim --steps 20 --selection bleu-mbr"
SETTINGS=(
  "plain: DDPM K=20, 1x1|--samplers ddpm --steps 20 --beams 1x1"
  "full: DDIM eta 0.5, K=20, E=5, 3x3, BLEU-MBR|$FULL --beams 3x3 --set ddim_eta=0.5 early_stopping_steps=5"
  "full, λ=0|$FULL --beams 3x3 --set ddim_eta=0.5 early_stopping_steps=5 length_score_weight=0"
  "full without E (E=0)|$FULL --beams 3x3 --set ddim_eta=0.5"
  "full without MBR (score selection)|--samplers ddim --steps 20 --beams 3x3 --set ddim_eta=0.5 early_stopping_steps=5"
  "full without eta (DDIM eta 0)|$FULL --beams 3x3 --set early_stopping_steps=5"
  "full without length beam (1x3)|$FULL --beams 1x3 --set ddim_eta=0.5 early_stopping_steps=5"
  "full without noise beam (3x1)|$FULL --beams 3x1 --set ddim_eta=0.5 early_stopping_steps=5"
  "E=5 alone: DDPM K=20, 1x1|--samplers ddpm --steps 20 --beams 1x1 --set early_stopping_steps=5"
  "DDIM eta 0.5 alone, 1x1|--samplers ddim --steps 20 --beams 1x1 --set ddim_eta=0.5"
  "3x3 BLEU-MBR alone (DDPM)|--samplers ddpm --steps 20 --beams 3x3 --selection bleu-mbr"
  "3x3 BLEU-MBR alone (DDPM), λ=0|--samplers ddpm --steps 20 --beams 3x3 --selection bleu-mbr --set length_score_weight=0"
  "3x3 score alone (DDPM)|--samplers ddpm --steps 20 --beams 3x3"
  "3x3 score alone (DDPM), λ=0|--samplers ddpm --steps 20 --beams 3x3 --set length_score_weight=0"
  "3x1 score alone (DDPM)|--samplers ddpm --steps 20 --beams 3x1"
  "3x1 score alone (DDPM), λ=0|--samplers ddpm --steps 20 --beams 3x1 --set length_score_weight=0"
  "1x3 score alone (DDPM)|--samplers ddpm --steps 20 --beams 1x3"
)

for factor in ${FACTORS:-1 auto 3}; do
  dir=F$factor
  if [[ ! -f $dir/checkpoint_last.pt.done ]]; then
    fairseq-train data-bin --user-dir "$ROOT/diffusion_plugin" --cpu --seed 1 \
      --task diffusion_translation --arch diffusion_transformer_tiny --share-all-embeddings \
      --rescaling-factor "$factor" --criterion diffusion_loss --label-smoothing 0.1 \
      --optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 1.0 \
      --lr 2e-3 --lr-scheduler inverse_sqrt --warmup-updates 200 \
      --max-tokens 4000 --max-update "$UPDATES" --save-dir "$dir" --no-epoch-checkpoints \
      --log-interval 100 --log-format simple > "$dir.train.log" 2>&1
    touch "$dir/checkpoint_last.pt.done"
  fi
  [[ -f $dir/inversion.md ]] && continue
  {
    echo "| setting | sacreBLEU |"
    echo "|---|---:|"
    for entry in "${SETTINGS[@]}"; do
      name=${entry%%|*}
      read -ra flags <<< "${entry#*|}"
      python "$ROOT/bench/frontier.py" --data data-bin --diffusion "$dir/checkpoint_last.pt" \
        --ref raw/test.tgt --speed-batches "${flags[@]}" --json "$dir/point.json" \
        > "$dir/point.log" 2>&1
      score=$(python -c 'import json, sys; print("%.2f" % json.load(open(sys.argv[1]))[-1]["bleu"])' "$dir/point.json")
      echo "| $name | $score |"
    done
  } > "$dir/inversion.md.partial"
  mv "$dir/inversion.md.partial" "$dir/inversion.md"
  echo "== F=$factor ($(grep -m1 -oE "F = [0-9.]+" "$dir.train.log" || echo "F=$factor"))"
  cat "$dir/inversion.md"
done

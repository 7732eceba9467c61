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
source "$ROOT/scripts/setup_env.sh"

bash "$ROOT/scripts/prepare_multi30k.sh" --raw-dir "$RAW" --out "$WORK/data-bin" --work "$WORK/text"

fairseq-train "$WORK/data-bin" --user-dir "$ROOT/diffusion_plugin" --cpu --seed 1 \
  --task diffusion_translation --source-lang de --target-lang en \
  --arch diffusion_transformer_tiny --encoder-layers 3 --decoder-layers 3 --model-dim 256 \
  --ffn-dim 1024 --attention-heads 4 --latent-dim 128 --dropout 0.1 \
  --rescaling-factor auto --dgs-max 0.15 --share-all-embeddings \
  --criterion diffusion_loss --label-smoothing 0.1 \
  --optimizer adam --adam-betas '(0.9,0.98)' --weight-decay 0.01 --clip-norm 1.0 \
  --lr 1e-3 --lr-scheduler inverse_sqrt --warmup-updates 500 --max-tokens 4096 \
  --save-dir "$WORK/checkpoints" --keep-last-epochs 1 --log-interval 100 \
  --stop-time-hours "$(python -c "print($MINUTES/60)")" --max-update 1000000

for beams in "1 1" "3 3"; do
  set -- $beams
  out="$WORK/generate.k20.b$1x$2.txt"
  fairseq-generate "$WORK/data-bin" --user-dir "$ROOT/diffusion_plugin" --cpu --seed 1 \
    --task diffusion_translation --source-lang de --target-lang en \
    --path "$WORK/checkpoints/checkpoint_last.pt" --gen-subset test --batch-size 100 \
    --remove-bpe --decoding-steps 20 --length-beam "$1" --noise-beam "$2" > "$out"
  echo "== K=20, length beam $1 x noise beam $2"
  grep -E "^Generate" "$out"
  python "$ROOT/scripts/bleu.py" "$out" --ref "$WORK/text/test.raw.en" --detok en
done

# The small Multi30k model that trains on a CPU (3+3 layers, width 256, latent 128, ~7.5M
# parameters, F from DGS_max = 0.15), sourced by cpu_check.sh, ablation.sh and distill.sh so that
# every run compared in the READMEs and closing notes uses the same settings. Since 2026-12-07:
# learning rate 2e-3 after 200 warm-up updates (before: 1e-3 after 500, ablation arm slow-lr) and
# Difformer's post-norm layers, learned positions and BERT initialisation: at 600 updates test
# sacreBLEU (K=5 / K=20, E=5) 0.49 / 0.98 -> 4.71 / 3.89 -> 6.72 / 8.05
# (bench/results/2026-12-07-multi30k-recipe.md). Since 2026-12-07 (session 12): SeqDiffuSeq's
# adaptive schedule, refit every ADAPTIVE_INTERVAL updates from update 2 x ADAPTIVE_INTERVAL on,
# with F folded into the refit table and re-derived from DGS_max (ablation arm fixed-schedule:
# the recipe before; bench/results/2026-12-07-multi30k-adaptive-recipe.md). Since session 13: the
# embedding norm with a learnt scale and shift (ablation arm no-embed-norm-affine;
# bench/results/2026-12-07-multi30k-clamping.md). Since session 14: BOS and EOS diffused around the
# target (ablation arm no-bos-eos; bench/results/2026-12-07-multi30k-bos-eos.md).
# Defines SMALL_TRAIN (fairseq-train arguments after the data-bin), SMALL_COMMON (the same without
# the encoder-decoder architecture and its adaptive schedule, for other architectures at the same
# width) and small_generate. Environment: ADAPTIVE_INTERVAL (110), SRC, TGT, REF.
# shellcheck shell=bash
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
SRC=${SRC:-de} TGT=${TGT:-en}
SMALL_COMMON=(--user-dir "$ROOT/diffusion_plugin" --cpu --seed 1
  --task diffusion_translation --source-lang "$SRC" --target-lang "$TGT"
  --model-dim 256 --ffn-dim 1024 --attention-heads 4 --latent-dim 128 --dropout 0.1
  --rescaling-factor auto --dgs-max 0.15
  --criterion diffusion_loss --label-smoothing 0.1
  --optimizer adam --adam-betas '(0.9,0.98)' --weight-decay 0.01 --clip-norm 1.0
  --lr 2e-3 --lr-scheduler inverse_sqrt --warmup-updates 200 --max-tokens 4096
  --keep-last-epochs 1 --log-interval 100)
ADAPTIVE_INTERVAL=${ADAPTIVE_INTERVAL:-110}
SMALL_TRAIN=("${SMALL_COMMON[@]}" --arch diffusion_transformer_tiny --encoder-layers 3
  --decoder-layers 3 --share-all-embeddings --post-norm --learned-positions --bert-init
  --adaptive-schedule --adaptive-warmup-updates "$ADAPTIVE_INTERVAL" --adaptive-update-interval "$ADAPTIVE_INTERVAL"
  --embed-norm-affine --diffuse-bos-eos)

# small_generate DATA CHECKPOINT OUT K LENGTH_BEAM NOISE_BEAM [fairseq-generate args...]:
# decode the test set into OUT and print its tokenised and sacrebleu BLEU against REF (default
# TEXT/test.raw.TGT; TEXT: the prepare script's work dir).
small_generate() {
  local data=$1 ckpt=$2 out=$3 k=$4 b1=$5 b2=$6
  shift 6
  fairseq-generate "$data" --user-dir "$ROOT/diffusion_plugin" --cpu --seed 1 \
    --task diffusion_translation --source-lang "$SRC" --target-lang "$TGT" \
    --path "$ckpt" --gen-subset test --batch-size 100 --required-batch-size-multiple 1 \
    --remove-bpe --decoding-steps "$k" --length-beam "$b1" --noise-beam "$b2" "$@" > "$out"
  echo "== K=$k, length beam $b1 x noise beam $b2: $out"
  grep -E "^Generate" "$out"
  python "$ROOT/scripts/bleu.py" "$out" --ref "${REF:-$TEXT/test.raw.$TGT}" --detok "$TGT"
}

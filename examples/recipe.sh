# The papers' training and decoding settings, sourced by examples/{multi30k,iwslt14,wmt14}/
# {train,generate}.sh after they set DATASET, SRC, TGT and DATA.
#
# Environment:
#   MODEL=difformer|seqdiffuseq  Difformer Table 21 or SeqDiffuSeq Table 6 / §D.1 (default difformer)
#   NGPU      GPUs to use (default: all that nvidia-smi lists; 0 trains on the CPU)
#   FP16      1 for --fp16 (default: 1 on GPUs, 0 on the CPU)
#   GPU_TOKENS  tokens one GPU holds per batch (default 8192); the paper's batch is reached with
#               --update-freq
#   SAVE_DIR  checkpoints (default checkpoints/DATASET_SRC_TGT_MODEL)
#   TEXT_DIR  text working dir of the prepare script, for the sacrebleu reference (default DATA_work)
#   AVG       checkpoints to average before decoding (default 5)
# Arguments to train.sh / generate.sh go to fairseq-train / fairseq-generate last (they win).
# shellcheck shell=bash
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODEL=${MODEL:-difformer}
NGPU=${NGPU:-$(nvidia-smi -L 2>/dev/null | grep -c "^GPU" || true)}
FP16=${FP16:-$([[ "$NGPU" -gt 0 ]] && echo 1 || echo 0)}
SAVE_DIR=${SAVE_DIR:-checkpoints/${DATASET}_${SRC}_${TGT}_$MODEL}
TEXT_DIR=${TEXT_DIR:-${DATA%/}_work}
AVG=${AVG:-5}

DEVICE=()
[[ "$NGPU" -eq 0 ]] && DEVICE=(--cpu)
[[ "$FP16" == 1 ]] && DEVICE+=(--fp16)
[[ "$NGPU" -gt 1 ]] && DEVICE+=(--distributed-world-size "$NGPU")

# batch_args TOTAL_TOKENS: per-GPU --max-tokens and --update-freq that make TOTAL tokens an update
batch_args() {
  local gpus=$((NGPU > 0 ? NGPU : 1)) per_gpu=${GPU_TOKENS:-8192} freq
  freq=$(((($1 + gpus * per_gpu - 1)) / (gpus * per_gpu)))
  echo --max-tokens $(($1 / (gpus * freq))) --update-freq "$freq"
}

case "$MODEL:$DATASET" in
  difformer:wmt14) ARCH=difformer_wmt_en_de TOKENS=65536 ;;
  difformer:*) ARCH=difformer_iwslt_de_en TOKENS=8192 ;;  # multi30k: the IWSLT14 settings
  seqdiffuseq:wmt14) ARCH=seqdiffuseq_wmt_en_de SENTENCES=1024 ;;
  seqdiffuseq:*) ARCH=seqdiffuseq_iwslt_de_en SENTENCES=128 ;;
  *) echo "error: MODEL must be difformer or seqdiffuseq, got '$MODEL'" >&2; exit 1 ;;
esac

# Difformer Table 21: AdamW (0.9, 0.98), wd 0.01, lr 5e-4, 10K warm-up, clip 1.0, 300K updates,
# label smoothing 0.1, length factor 0.1, sqrt schedule, T = 2000, F from DGS_max = 0.15.
# SeqDiffuSeq §D.1: batch 128 sentences (WMT14 1024), up to 1M updates, a checkpoint every 10K,
# lr 1e-4 decayed linearly to 0, rounding and prior losses (DiffusionLM objective).
train() {
  local args=(--user-dir "$ROOT/diffusion_plugin" --task diffusion_translation
    --source-lang "$SRC" --target-lang "$TGT" --arch "$ARCH" --share-all-embeddings
    --diffusion-steps 2000 --noise-schedule sqrt --criterion diffusion_loss
    --optimizer adam --adam-betas '(0.9,0.98)' --weight-decay 0.01 --clip-norm 1.0
    --save-dir "$SAVE_DIR" --keep-interval-updates "$AVG" --log-format simple
    --log-interval 100 "${DEVICE[@]}")
  if [[ "$MODEL" == difformer ]]; then
    # shellcheck disable=SC2046
    args+=(--rescaling-factor auto --dgs-max 0.15 --label-smoothing 0.1
      --length-loss-factor 0.1 --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 10000
      --warmup-init-lr 1e-7 --max-update 300000 --save-interval-updates 5000
      $(batch_args "$TOKENS"))
  else
    args+=(--rounding-loss --prior-loss --lr 1e-4 --lr-scheduler polynomial_decay
      --total-num-update 1000000 --end-learning-rate 0 --max-update 1000000
      --save-interval-updates 10000 --batch-size $((SENTENCES / (NGPU > 0 ? NGPU : 1))))
  fi
  fairseq-train "$DATA" "${args[@]}" "$@"
}

# Average the last AVG update checkpoints, decode the test set, print fairseq's tokenised BLEU
# and sacrebleu (detokenised, signature printed; lowercased when the data is, as IWSLT14).
# Difformer: K = 20 steps, early stop 5, 7 lengths x 3 noises (give an AR model as
# --path avg.pt:ar.pt with --candidate-selection to rerank as the paper). SeqDiffuSeq: all
# T = 2000 steps, MBR over 10 draws.
generate() {
  local avg="$SAVE_DIR/checkpoint_avg$AVG.pt" out="$SAVE_DIR/generate-test.txt" ref
  python "$ROOT/scripts/average_checkpoints.py" --inputs "$SAVE_DIR" \
    --num-update-checkpoints "$AVG" --output "$avg"
  local args=(--user-dir "$ROOT/diffusion_plugin" --task diffusion_translation
    --source-lang "$SRC" --target-lang "$TGT" --path "$avg" --gen-subset test
    --batch-size 64 --remove-bpe --seed 1 "${DEVICE[@]}")
  if [[ "$MODEL" == difformer ]]; then
    args+=(--decoding-steps 20 --early-stopping-steps 5 --length-beam 7 --noise-beam 3)
  else
    args+=(--decoding-steps 2000 --noise-beam 10 --candidate-selection bleu-mbr)
  fi
  fairseq-generate "$DATA" "${args[@]}" "$@" >"$out"
  echo "== tokenised BLEU (fairseq-generate, on Moses-tokenised text)"
  grep -E "^Generate" "$out"
  echo "== sacrebleu (detokenised)"
  ref="$TEXT_DIR/test.raw.$TGT"
  if [[ "$DATASET" == iwslt14 ]]; then  # lowercased data: score case-insensitively
    python -c 'import sys; sys.stdout.writelines(l.lower() for l in open(sys.argv[1]))' \
      "$ref" >"$SAVE_DIR/test.ref.lc"
    ref="$SAVE_DIR/test.ref.lc"
  fi
  python "$ROOT/scripts/bleu.py" "$out" --ref "$ref" --detok "$TGT"
}

# The papers' training and decoding settings, sourced by examples/*/{train,generate}.sh after
# they set DATASET, SRC, TGT and DATA: translation (multi30k, iwslt14, wmt14) and the
# non-translation tasks of scripts/prepare_seq2seq.sh (qqp, wiki_auto, quasar_t, conversation).
#
# Environment:
#   MODEL=difformer|seqdiffuseq|diffuseq  Difformer Table 21, SeqDiffuSeq Table 6 / §5 / §D.1, or
#             DiffuSeq §4.1 (non-translation tasks only) (default difformer)
#   NGPU      GPUs to use (default: all that nvidia-smi lists; 0 trains on the CPU)
#   FP16      1 for --fp16 (default: 1 on GPUs, 0 on the CPU)
#   GPU_TOKENS  tokens one GPU holds per batch (default 8192); the paper's batch is reached with
#               --update-freq
#   SAVE_DIR  checkpoints (default checkpoints/DATASET_SRC_TGT_MODEL)
#   TEXT_DIR  text working dir of the prepare script, for the sacrebleu reference (default DATA_work)
#   AVG       checkpoints to average before decoding (default 5)
#   BERTSCORE_MODEL  non-translation tasks: a local model directory for BERTScore (DiffuSeq used
#             microsoft/deberta-xlarge-mnli; nothing is downloaded; unset: BERTScore skipped)
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

recipe_error() {
  echo "error: $*" >&2
  exit 1
}

SEQ2SEQ=0  # a non-translation task: scored with scripts/score.py, lengths capped as below
case "$DATASET" in qqp | wiki_auto | quasar_t | conversation) SEQ2SEQ=1 ;; esac
# Difformer Table 21's IWSLT14/WMT14 values; the QQP, Wiki-Auto and Quasar-T columns change some
UPDATES=300000 LR=5e-4 WARMUP=10000 DGS=0.15 LENGTHS=()
case "$MODEL:$DATASET" in
  difformer:wmt14) ARCH=difformer_wmt_en_de TOKENS=65536 ;;
  difformer:qqp) ARCH=difformer_base TOKENS=8192 UPDATES=50000 ;;
  difformer:wiki_auto) ARCH=difformer_base TOKENS=65536 UPDATES=30000 ;;
  difformer:quasar_t) ARCH=difformer_base TOKENS=65536 UPDATES=100000 LR=3e-4 WARMUP=5000 DGS=0.20 ;;
  difformer:conversation) recipe_error "Difformer (Table 21) has no Commonsense Conversation" \
    "setting: use MODEL=diffuseq or MODEL=seqdiffuseq" ;;
  difformer:*) ARCH=difformer_iwslt_de_en TOKENS=8192 ;;  # multi30k: the IWSLT14 settings
  seqdiffuseq:wmt14) ARCH=seqdiffuseq_wmt_en_de SENTENCES=1024 ;;
  # Table 6, non-translation: input 128, output 64 positions (longer sources are cut)
  seqdiffuseq:qqp | seqdiffuseq:wiki_auto | seqdiffuseq:quasar_t | seqdiffuseq:conversation)
    ARCH=seqdiffuseq_base SENTENCES=128
    LENGTHS=(--max-source-positions 128 --max-target-positions 64) ;;
  seqdiffuseq:*) ARCH=seqdiffuseq_iwslt_de_en SENTENCES=128 ;;
  # §4.1: 128 positions for source + target, here 64 each (the paper gives only the total)
  diffuseq:qqp | diffuseq:wiki_auto | diffuseq:quasar_t | diffuseq:conversation)
    ARCH=diffuseq_base SENTENCES=128
    LENGTHS=(--max-source-positions 64 --max-target-positions 64) ;;
  diffuseq:*) recipe_error "DiffuSeq reports no translation setting (its tasks: qqp, wiki_auto," \
    "quasar_t, conversation); examples/multi30k/ablation.sh diffuseq trains it on Multi30k" ;;
  *) recipe_error "MODEL must be difformer, seqdiffuseq or diffuseq, got '$MODEL'" ;;
esac
# non-translation: sources beyond the positions are cut, train/valid pairs whose target exceeds
# them skipped (fairseq logs how many)
SIZES=()
[[ "$SEQ2SEQ" == 1 ]] && SIZES=(--truncate-source --skip-invalid-size-inputs-valid-test)

# Difformer Table 21: AdamW (0.9, 0.98), wd 0.01, lr 5e-4 (Quasar-T 3e-4), 10K warm-up (Quasar-T
# 5K), clip 1.0, 300K updates (QQP 50K, Wiki-Auto 30K, Quasar-T 100K), label smoothing 0.1,
# length factor 0.1, sqrt schedule, T = 2000, F from DGS_max = 0.15 (Quasar-T 0.20).
# SeqDiffuSeq §5 and §D.1: batch 128 sentences (WMT14 1024), up to 1M updates, a checkpoint every
# 10K, lr 1e-4 after 10K warm-up updates decayed linearly to 0, rounding and prior losses
# (DiffusionLM objective). DiffuSeq (§3-4.1) gives no optimiser settings: SeqDiffuSeq's, with its
# rounding and embedding-norm terms and importance-sampled timesteps (Eq. 9).
train() {
  local args=(--user-dir "$ROOT/diffusion_plugin" --task diffusion_translation
    --source-lang "$SRC" --target-lang "$TGT" --arch "$ARCH"
    --diffusion-steps 2000 --noise-schedule sqrt --criterion diffusion_loss
    --optimizer adam --adam-betas '(0.9,0.98)' --weight-decay 0.01 --clip-norm 1.0
    --save-dir "$SAVE_DIR" --keep-interval-updates "$AVG" --log-format simple
    --log-interval 100 "${LENGTHS[@]}" "${SIZES[@]}" "${DEVICE[@]}")
  if [[ "$MODEL" != diffuseq ]]; then  # DiffuSeq has one table by construction
    args+=(--share-all-embeddings)
  fi
  if [[ "$MODEL" == difformer ]]; then
    # shellcheck disable=SC2046
    args+=(--rescaling-factor auto --dgs-max "$DGS" --label-smoothing 0.1
      --length-loss-factor 0.1 --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates "$WARMUP"
      --warmup-init-lr 1e-7 --max-update "$UPDATES" --save-interval-updates 5000
      $(batch_args "$TOKENS"))
  else
    args+=(--rounding-loss --prior-loss --lr 1e-4 --lr-scheduler polynomial_decay
      --warmup-updates 10000 --total-num-update 1000000 --end-learning-rate 0
      --max-update 1000000 --save-interval-updates 10000
      --batch-size $((SENTENCES / (NGPU > 0 ? NGPU : 1))))
  fi
  if [[ "$MODEL" == diffuseq ]]; then
    args+=(--timestep-sampler loss-second-moment)
  fi
  fairseq-train "$DATA" "${args[@]}" "$@"
}

# Average the last AVG update checkpoints, decode the test set, print fairseq's tokenised BLEU
# and, for translation, sacrebleu (detokenised, signature printed; lowercased when the data is, as
# IWSLT14), for the other tasks scripts/score.py's quality and diversity metrics.
# Difformer: K = 20 steps, early stop 5, 7 lengths x 3 noises (give an AR model as
# --path avg.pt:ar.pt with --candidate-selection to rerank as the paper; other tasks: MBR among
# the 21). SeqDiffuSeq and DiffuSeq: all T = 2000 steps, MBR over 10 draws. Other tasks: every
# candidate is printed; self-BLEU and div-4 over 3 of them per source (DiffuSeq §4.1).
generate() {
  local avg="$SAVE_DIR/checkpoint_avg$AVG.pt" out="$SAVE_DIR/generate-test.txt" ref
  local subwords=(--remove-bpe) score=(--detok en --diversity-samples 3)
  python "$ROOT/scripts/average_checkpoints.py" --inputs "$SAVE_DIR" \
    --num-update-checkpoints "$AVG" --output "$avg"
  if grep -qs "subwords: wordpiece" "$DATA/prepare_$DATASET.done"; then
    subwords=(--bpe wordpiece)  # prepared with --vocab bert: join the ## pieces
  fi
  local args=(--user-dir "$ROOT/diffusion_plugin" --task diffusion_translation
    --source-lang "$SRC" --target-lang "$TGT" --path "$avg" --gen-subset test
    --batch-size 64 "${subwords[@]}" --seed 1 "${LENGTHS[@]}" "${SIZES[@]}" "${DEVICE[@]}")
  local candidates=10
  if [[ "$MODEL" == difformer ]]; then
    args+=(--decoding-steps 20 --early-stopping-steps 5 --length-beam 7 --noise-beam 3)
    candidates=21
  else
    args+=(--decoding-steps 2000 --noise-beam 10)
  fi
  if [[ "$MODEL" != difformer || "$SEQ2SEQ" == 1 ]]; then
    args+=(--candidate-selection bleu-mbr)
  fi
  if [[ "$SEQ2SEQ" == 1 ]]; then  # every candidate printed, best (MBR) first
    args+=(--nbest "$candidates")
  fi
  fairseq-generate "$DATA" "${args[@]}" "$@" >"$out"
  echo "== tokenised BLEU (fairseq-generate)"
  grep -E "^Generate" "$out"
  if [[ "$SEQ2SEQ" == 1 ]]; then
    echo "== quality and diversity (scripts/score.py; its README section says how each compares)"
    if [[ -n "${BERTSCORE_MODEL:-}" ]]; then
      score+=(--bertscore-model "$BERTSCORE_MODEL")
    fi
    python "$ROOT/scripts/score.py" "$out" "${score[@]}"
    return
  fi
  echo "== sacrebleu (detokenised)"
  ref="$TEXT_DIR/test.raw.$TGT"
  if [[ "$DATASET" == iwslt14 ]]; then  # lowercased data: score case-insensitively
    python -c 'import sys; sys.stdout.writelines(l.lower() for l in open(sys.argv[1]))' \
      "$ref" >"$SAVE_DIR/test.ref.lc"
    ref="$SAVE_DIR/test.ref.lc"
  fi
  python "$ROOT/scripts/bleu.py" "$out" --ref "$ref" --detok "$TGT"
}

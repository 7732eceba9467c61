#!/usr/bin/env bash
# Sequence-level knowledge distillation (Kim & Rush 2016) for a fairseq data-bin; --help for usage.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare_lib.sh"

usage() {
  cat <<'EOF'
Usage: bash scripts/distill.sh --data-bin DIR --src L --tgt L [options] [-- fairseq-train args]

  1. takes the AR teacher --teacher CKPT, or trains a fairseq transformer on DIR (arguments
     after "--" are added to, and override, the teacher's training flags);
  2. scores the teacher on the test split (beam 5, tokenised BLEU of fairseq-generate);
  3. translates the train split with beam 5;
  4. binarises the distilled train split with DIR's dictionaries (--srcdict/--tgtdict) into
     OUT, next to DIR's valid and test splits (copied).
Steps resume: a trained teacher (WORK/teacher/checkpoint_last.pt with its .done marker), a
complete translation and a finished OUT are reused by a rerun.

Options:
  --data-bin DIR     the original data-bin (joined or separate dictionaries)
  --src L, --tgt L   language pair
  --teacher CKPT     existing AR checkpoint (skips training)
  --out DIR          distilled data-bin (default: DIR_distill)
  --work DIR         teacher checkpoints and translations (default: OUT_work)
  --arch ARCH        teacher architecture (default: transformer_iwslt_de_en)
  --max-update N     teacher training updates (default: 50000)
  --max-tokens N     tokens per batch, training and translation (default: 4096)
  --beam N           beam size (default: 5)
  --shards N         translate the train split in N processes of one thread each, every one
                     on 1/N of the batches (fairseq's --distributed-world-size sharding of
                     fairseq-generate; default: 1, with fairseq's threading)
  --max-length-ratio R  replace a translation longer than R x source + 5 tokens (a weak
                     teacher's repetition loop) by the original target (default: keep all)
  -h, --help         show this help
GPU use follows fairseq (CUDA when visible); set CPU=1 to force --cpu.
EOF
}

DATA="" SRC="" TGT="" TEACHER="" OUT="" WORK="" ARCH=transformer_iwslt_de_en
MAX_UPDATE=50000 MAX_TOKENS=4096 BEAM=5 SHARDS=1 RATIO="" EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data-bin | --src | --tgt | --teacher | --out | --work | --arch | --max-update | --max-tokens | --beam | --shards | --max-length-ratio)
      [[ $# -ge 2 ]] || die "$1 needs a value (see --help)"
      case "$1" in
        --data-bin) DATA="${2%/}" ;;
        --src) SRC="$2" ;;
        --tgt) TGT="$2" ;;
        --teacher) TEACHER="$2" ;;
        --out) OUT="${2%/}" ;;
        --work) WORK="$2" ;;
        --arch) ARCH="$2" ;;
        --max-update) MAX_UPDATE="$2" ;;
        --max-tokens) MAX_TOKENS="$2" ;;
        --beam) BEAM="$2" ;;
        --shards) SHARDS="$2" ;;
        --max-length-ratio) RATIO="$2" ;;
      esac
      shift 2
      ;;
    --) shift; EXTRA=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ -n "$DATA" && -n "$SRC" && -n "$TGT" ]] || die "--data-bin, --src and --tgt are required"
for split in train valid test; do
  for lang in "$SRC" "$TGT"; do
    [[ -f "$DATA/$split.$SRC-$TGT.$lang.bin" ]] || die "$DATA lacks $split.$SRC-$TGT.$lang.bin"
  done
done
[[ "$SHARDS" =~ ^[1-9][0-9]*$ ]] || die "--shards must be a positive integer, got '$SHARDS'"
[[ -z "$TEACHER" || -f "$TEACHER" ]] || die "teacher checkpoint $TEACHER not found"
OUT="${OUT:-${DATA}_distill}"
WORK="${WORK:-${OUT}_work}"
mkdir -p "$WORK"
# the plugin's safe loader reads fairseq checkpoints under torch's weights_only default;
# fairseq-generate would drop a last batch smaller than --required-batch-size-multiple
DEVICE=(--user-dir "$SCRIPT_DIR/../diffusion_plugin" --required-batch-size-multiple 1)
[[ "${CPU:-0}" == 1 ]] && DEVICE+=(--cpu)
SHARED=()
cmp -s "$DATA/dict.$SRC.txt" "$DATA/dict.$TGT.txt" && SHARED=(--share-all-embeddings)

if [[ -z "$TEACHER" ]]; then
  TEACHER="$WORK/teacher/checkpoint_last.pt"
  if [[ -f "$WORK/teacher.done" ]]; then
    echo "skip: teacher already trained ($TEACHER)"
  else
    echo "== training the AR teacher ($ARCH, $MAX_UPDATE updates) -> $WORK/teacher"
    fairseq-train "$DATA" "${DEVICE[@]}" --source-lang "$SRC" --target-lang "$TGT" \
      --arch "$ARCH" "${SHARED[@]}" --dropout 0.3 --weight-decay 0.0001 \
      --optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 0.0 \
      --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 4000 \
      --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
      --max-tokens "$MAX_TOKENS" --max-update "$MAX_UPDATE" --save-dir "$WORK/teacher" \
      --no-epoch-checkpoints --log-format simple --log-interval 100 "${EXTRA[@]}"
    touch "$WORK/teacher.done"
  fi
fi

echo "== teacher on the test split (beam $BEAM)"
fairseq-generate "$DATA" "${DEVICE[@]}" --source-lang "$SRC" --target-lang "$TGT" \
  --path "$TEACHER" --gen-subset test --beam "$BEAM" --max-tokens "$MAX_TOKENS" \
  --remove-bpe >"$WORK/test.gen"
grep -E "^Generate" "$WORK/test.gen" | sed 's/^/teacher test: /'

if [[ -f "$WORK/train.gen.done" ]]; then
  echo "skip: train split already translated ($WORK/train.gen)"
else
  echo "== translating the train split with the teacher (beam $BEAM, $SHARDS process(es))"
  translate() {  # translate SHARD OUT: fairseq-generate on shard SHARD of SHARDS
    local sharding=()
    [[ "$SHARDS" -gt 1 ]] && sharding=(--distributed-world-size "$SHARDS" --distributed-rank "$1")
    fairseq-generate "$DATA" "${DEVICE[@]}" --source-lang "$SRC" --target-lang "$TGT" \
      --path "$TEACHER" --gen-subset train --beam "$BEAM" --max-tokens "$MAX_TOKENS" \
      "${sharding[@]}" >"$2"
  }
  if [[ "$SHARDS" == 1 ]]; then
    translate 0 "$WORK/train.gen"
  else
    pids=()
    for ((shard = 0; shard < SHARDS; shard++)); do
      OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 translate "$shard" "$WORK/train.gen.$shard" &
      pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || die "a translation shard failed (see $WORK/train.gen.*)"; done
    cat "$WORK"/train.gen.[0-9]* >"$WORK/train.gen"
    rm -f "$WORK"/train.gen.[0-9]*
  fi
  touch "$WORK/train.gen.done"
fi
RATIO_FLAG=()
[[ -n "$RATIO" ]] && RATIO_FLAG=(--max-length-ratio "$RATIO")
"$PYTHON" "$SCRIPT_DIR/distill_text.py" "$WORK/train.gen" --data-bin "$DATA" --src "$SRC" \
  --tgt "$TGT" --out "$WORK/train.distill" "${RATIO_FLAG[@]}"

echo "== fairseq-preprocess (original dictionaries) -> $OUT"
mkdir -p "$OUT"
rm -f "$OUT"/dict.*.txt "$OUT"/train.*
fairseq-preprocess --source-lang "$SRC" --target-lang "$TGT" --trainpref "$WORK/train.distill" \
  --srcdict "$DATA/dict.$SRC.txt" --tgtdict "$DATA/dict.$TGT.txt" --destdir "$OUT" --workers 2
cp "$DATA"/{valid,test}."$SRC-$TGT".*.{bin,idx} "$OUT"/
echo "distilled data-bin: $OUT ($(wc -l <"$WORK/train.distill.$SRC") train pairs; valid and" \
  "test copied from $DATA); teacher: $TEACHER; done in ${SECONDS}s"

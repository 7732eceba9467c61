#!/usr/bin/env bash
# Prepare the papers' non-translation tasks (QQP, Wiki-Auto, Quasar-T, Commonsense Conversation)
# for fairseq; the text stage is scripts/seq2seq_text.py; --help for usage.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare_lib.sh"

usage() {
  cat <<'EOF'
Usage: bash scripts/prepare_seq2seq.sh --task TASK --raw-dir DIR [--out DIR] [options]

TASK: qqp (paraphrase), wiki_auto (simplification), quasar_t (question generation) or
conversation (Commonsense Conversation dialogue), as DiffuSeq (Table 1), SeqDiffuSeq (Table 1)
and Difformer (Table 4) evaluate them. Without --raw-dir it prints where the task's data is
published and stops: nothing is downloaded.
  1. reads RAW/{train,valid,test}.jsonl (DiffuSeq's released splits: one JSON object a line
     with the strings "src" and "trg") or plain line-aligned RAW/{train,valid,test}.{src,trg};
     a line that is not such an object, or sides of different lengths, stop the recipe; pairs
     with an empty side are dropped and counted;
  2. --vocab bpe (default): sacremoses tokenisation and a joint subword-nmt BPE learned on both
     train sides; --vocab bert --vocab-file FILE: BERT's basic tokenisation and WordPiece over
     the given vocab.txt (no download), the fairseq dictionary made from it;
     lowercased (and, for WordPiece, accents stripped) unless --cased: the papers' subword
     vocabulary for these tasks is bert-base-uncased's (SeqDiffuSeq §5);
  3. binarises with fairseq-preprocess --joined-dictionary into OUT (languages src and trg).
Each step leaves a marker (WORK/.steps, OUT/prepare_TASK.done): a rerun skips finished steps
and redoes a step whose settings changed, and every step after it.

Options:
  --task TASK        qqp, wiki_auto, quasar_t or conversation (required)
  --raw-dir DIR      the task's raw files (see 1.)
  --out DIR          data-bin to create (default: data-bin/TASK)
  --work DIR         text files (default: OUT_work): {split}.raw.{src,trg} (raw references),
                     {split}.tok.*, {split}.bpe.* (the subword text that is binarised)
  --vocab KIND       bpe (default) or bert
  --vocab-file FILE  WordPiece vocab.txt (with --vocab bert)
  --bpe-merges N     joint BPE merges (--vocab bpe; default 10000)
  --cased            keep case
  --workers N        tokeniser and fairseq-preprocess processes (default: nproc)
  -h, --help         show this help
Tools: ${PYTHON:-python} (sacremoses, subword-nmt) and fairseq-preprocess from PATH.
EOF
}

TASK="" RAW_DIR="" OUT="" WORK="" VOCAB=bpe
WORKERS=$(nproc 2>/dev/null || echo 1)
TEXT_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --task | --raw-dir | --out | --work | --vocab | --vocab-file | --bpe-merges | --workers)
      [[ $# -ge 2 ]] || die "$1 needs a value (see --help)"
      case "$1" in
        --task) TASK="$2" ;;
        --raw-dir) RAW_DIR="$2" ;;
        --out) OUT="$2" ;;
        --work) WORK="$2" ;;
        --vocab) VOCAB="$2"; TEXT_ARGS+=("$1" "$2") ;;
        --vocab-file) TEXT_ARGS+=("$1" "$(realpath -m "$2")") ;;
        --bpe-merges) [[ "$2" =~ ^[1-9][0-9]*$ ]] ||
                        die "--bpe-merges takes a positive integer, got '$2'"
                      TEXT_ARGS+=("$1" "$2") ;;
        --workers) WORKERS="$2" ;;
      esac
      shift 2
      ;;
    --cased) TEXT_ARGS+=("$1"); shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ -n "$TASK" ]] || die "--task is required: qqp, wiki_auto, quasar_t or conversation"
[[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || die "--workers takes a positive integer, got '$WORKERS'"
if [[ -n "$RAW_DIR" ]]; then
  [[ -d "$RAW_DIR" ]] || die "--raw-dir $RAW_DIR is not a directory"
  TEXT_ARGS+=(--raw-dir "$(cd "$RAW_DIR" && pwd)")
fi
OUT="${OUT:-data-bin/$TASK}"
OUT="${OUT%/}"
WORK="${WORK:-${OUT}_work}"
check_tools

echo "== text stage: $TASK -> $WORK"
"$PYTHON" "$SCRIPT_DIR/seq2seq_text.py" --task "$TASK" --work "$WORK" --workers "$WORKERS" \
  "${TEXT_ARGS[@]}" || exit $?

DICT=()
[[ "$VOCAB" == bert ]] && DICT=("$WORK/dict.txt")
binarize_once "$OUT/prepare_$TASK.done" "$WORK/.steps/subwords" src trg "$WORK" "$OUT" \
  "$WORKERS" "${DICT[@]}"
echo "data-bin: $OUT; raw test references: $WORK/test.raw.trg"
echo "done in ${SECONDS}s"

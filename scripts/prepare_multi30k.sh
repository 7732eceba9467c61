#!/usr/bin/env bash
# Prepare Multi30k for fairseq: clean, Moses-tokenise, joint BPE, fairseq-preprocess.
# The text stage is scripts/multi30k_text.py; run with --help for usage.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash scripts/prepare_multi30k.sh --raw-dir DIR --out DIR [options]

Prepares Multi30k for fairseq with Python tooling only:
  1. checks RAW/{train,val,test}.{SRC,TGT} exist and that both sides have equal line counts;
  2. drops pairs with an empty side (e.g. the trailing blank line) and reports how many;
  3. tokenises with sacremoses (escape=False, aggressive dash splits: "a-b" -> "a @-@ b"),
     lowercasing only with --lowercase (default: keep case);
  4. learns a joint BPE with subword-nmt on the train text of both sides and applies it;
  5. binarises with fairseq-preprocess --joined-dictionary --workers 2 into OUT.
A rerun that finds OUT complete with the same settings skips, unless --force.

Options:
  --raw-dir DIR      raw Multi30k files {train,val,test}.{SRC,TGT} (required)
  --out DIR          fairseq data-bin directory to create (required)
  --work DIR         text working files (default: OUT_work next to OUT): {split}.raw.LANG
                     (test.raw.TGT = untokenised reference for sacrebleu), {split}.tok.LANG,
                     {split}.bpe.LANG and the BPE codes file "code"
  --src LANG         source language (default: de)
  --tgt LANG         target language (default: en)
  --bpe-merges N     joint BPE merge operations (default: 10000)
  --lowercase        lowercase after tokenisation (score with sacrebleu -lc then)
  --force            rebuild even if OUT is already complete
  -h, --help         show this help

Tools: runs ${PYTHON:-python} (needs sacremoses and subword-nmt) and fairseq-preprocess from
PATH, so activate the project's virtualenv first (source .venv/bin/activate) or set PYTHON
and PATH.
EOF
}

source "$(dirname "${BASH_SOURCE[0]}")/prepare_lib.sh"
RAW_DIR="" OUT="" WORK="" SRC="de" TGT="en" MERGES=10000 LOWERCASE=0 FORCE=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --raw-dir | --out | --work | --src | --tgt | --bpe-merges)
      [[ $# -ge 2 ]] || die "$1 needs a value (see --help)"
      case "$1" in
        --raw-dir) RAW_DIR="$2" ;;
        --out) OUT="$2" ;;
        --work) WORK="$2" ;;
        --src) SRC="$2" ;;
        --tgt) TGT="$2" ;;
        --bpe-merges) MERGES="$2" ;;
      esac
      shift 2
      ;;
    --lowercase) LOWERCASE=1; shift ;;
    --force) FORCE=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[[ -n "$RAW_DIR" && -n "$OUT" ]] || die "--raw-dir and --out are required (see --help)"
[[ "$MERGES" =~ ^[1-9][0-9]*$ ]] || die "--bpe-merges must be a positive integer, got '$MERGES'"
[[ "$SRC" != "$TGT" ]] || die "--src and --tgt must differ"
OUT="${OUT%/}"
WORK="${WORK:-${OUT}_work}"

# Everything a complete OUT/WORK holds; the stamp records the settings that produced them.
STAMP="$OUT/prepare_multi30k.done"
SETTINGS="raw_dir=$(cd "$RAW_DIR" 2>/dev/null && pwd || echo "$RAW_DIR") src=$SRC tgt=$TGT"
SETTINGS+=" bpe_merges=$MERGES lowercase=$LOWERCASE work=$WORK"
OUT_FILES=("$OUT/dict.$SRC.txt" "$OUT/dict.$TGT.txt")
for split in train valid test; do
  for lang in "$SRC" "$TGT"; do
    OUT_FILES+=("$OUT/$split.$SRC-$TGT.$lang.bin" "$OUT/$split.$SRC-$TGT.$lang.idx")
  done
done
EXPECTED=("${OUT_FILES[@]}" "$WORK/code" "$WORK/test.raw.$TGT")

if [[ -f "$STAMP" && "$FORCE" == 0 ]]; then
  [[ "$(cat "$STAMP")" == "$SETTINGS" ]] ||
    die "$OUT was prepared with other settings ($(cat "$STAMP")); use --force to rebuild"
  all_there=1
  for f in "${EXPECTED[@]}"; do [[ -f "$f" ]] || all_there=0; done
  if [[ "$all_there" == 1 ]]; then
    echo "skip: $OUT is already complete ($SETTINGS); use --force to rebuild"
    exit 0
  fi
  echo "$OUT has a stamp but misses files: rebuilding"
fi
rm -f "$STAMP"

check_tools

echo "== text: $RAW_DIR -> $WORK"
text_args=(--raw-dir "$RAW_DIR" --work "$WORK" --src "$SRC" --tgt "$TGT" --bpe-merges "$MERGES")
[[ "$LOWERCASE" == 1 ]] && text_args+=(--lowercase)
"$PYTHON" "$SCRIPT_DIR/multi30k_text.py" "${text_args[@]}"

binarize "$SRC" "$TGT" "$WORK" "$OUT" 2
echo "data-bin: $OUT; BPE codes: $WORK/code; sacrebleu reference: $WORK/test.raw.$TGT"
echo "done in ${SECONDS}s"
echo "$SETTINGS" >"$STAMP"

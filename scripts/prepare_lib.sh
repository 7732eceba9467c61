# Shared by the prepare_*.sh recipes (source it): errors, tool checks, binarisation, and the
# argument handling of the archive-based recipes (prepare_wmt14.sh, prepare_iwslt14.sh).
# shellcheck shell=bash

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python}"

die() {
  echo "error: $*" >&2
  exit 1
}

# Python with sacremoses and subword-nmt, and fairseq-preprocess on PATH.
check_tools() {
  command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found: activate the virtualenv or set PYTHON"
  "$PYTHON" -c 'import sacremoses, subword_nmt' 2>/dev/null ||
    die "$PYTHON lacks sacremoses/subword-nmt: activate the project's virtualenv or set PYTHON"
  command -v fairseq-preprocess >/dev/null ||
    die "fairseq-preprocess not on PATH: activate the virtualenv (source .venv/bin/activate)"
}

# binarize SRC TGT WORK OUT WORKERS [DICT]: WORK/{train,valid,test}.bpe.* -> OUT with a joined
# dictionary (built from the train text, or the given fairseq DICT), then print the line counts
# and the dictionary size.
binarize() {
  local src=$1 tgt=$2 work=$3 out=$4 workers=$5 split n_dict given=()
  [[ -n "${6:-}" ]] && given=(--srcdict "$6")
  echo "== fairseq-preprocess -> $out"
  mkdir -p "$out"
  rm -f "$out"/dict.*.txt "$out"/{train,valid,test}.*.{bin,idx} "$out/preprocess.log"
  fairseq-preprocess --source-lang "$src" --target-lang "$tgt" \
    --trainpref "$work/train.bpe" --validpref "$work/valid.bpe" --testpref "$work/test.bpe" \
    --destdir "$out" --joined-dictionary --workers "$workers" "${given[@]}"
  echo "== summary"
  for split in train valid test; do
    echo "$split: $(wc -l <"$work/$split.bpe.$src") sentence pairs"
  done
  n_dict=$(wc -l <"$out/dict.$src.txt")
  echo "joined dictionary: $n_dict types in dict.$src.txt (= dict.$tgt.txt);" \
    "model vocabulary $((n_dict + 4)) with fairseq's 4 special symbols"
}

# binarize_once STAMP MARKER SRC TGT WORK OUT WORKERS [DICT]: binarize unless the binarised
# output is up to date, i.e. its STAMP holds the settings chain of the text stage's last step
# (its MARKER in WORK/.steps) and is newer than that marker.
binarize_once() {
  local stamp=$1 marker=$2 settings
  shift 2
  settings="$(cat "$marker")"
  if [[ -f "$stamp" && "$stamp" -nt "$marker" && "$(cat "$stamp")" == "$settings" ]]; then
    echo "skip: step 'binarize' already done ($4)"
  else
    rm -f "$stamp"
    binarize "$@"
    echo "$settings" >"$stamp"
  fi
}

# prepare_archives CORPUS SRC TGT MERGES MAX_LEN DEFAULT_OUT "$@": the whole archive-based recipe.
prepare_archives() {
  local corpus=$1 src=$2 tgt=$3 merges=$4 max_len=$5 out=$6
  shift 6
  local raw_dir="" work="" workers no_verify=0
  workers=$(nproc 2>/dev/null || echo 1)
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --raw-dir | --out | --work | --bpe-merges | --max-len | --workers)
        [[ $# -ge 2 ]] || die "$1 needs a value (see --help)"
        case "$1" in
          --raw-dir) raw_dir="$2" ;;
          --out) out="$2" ;;
          --work) work="$2" ;;
          --bpe-merges) merges="$2" ;;
          --max-len) max_len="$2" ;;
          --workers) workers="$2" ;;
        esac
        shift 2
        ;;
      --no-verify) no_verify=1; shift ;;
      -h | --help) usage; exit 0 ;;
      *) die "unknown argument: $1 (see --help)" ;;
    esac
  done
  for value in "$merges" "$max_len" "$workers"; do
    [[ "$value" =~ ^[1-9][0-9]*$ ]] ||
      die "--bpe-merges, --max-len and --workers take positive integers, got '$value'"
  done
  [[ -z "$raw_dir" || -d "$raw_dir" ]] || die "--raw-dir $raw_dir is not a directory"
  out="${out%/}"
  work="${work:-${out}_work}"
  check_tools

  local text_args=("$corpus" --work "$work" --src "$src" --tgt "$tgt" --bpe-merges "$merges"
    --max-len "$max_len" --workers "$workers")
  [[ -n "$raw_dir" ]] && text_args+=(--raw-dir "$(cd "$raw_dir" && pwd)")
  [[ "$no_verify" == 1 ]] && text_args+=(--no-verify)
  echo "== text stage: $corpus $src-$tgt -> $work"
  "$PYTHON" "$SCRIPT_DIR/prepare_text.py" "${text_args[@]}" || exit $?

  binarize_once "$out/prepare_$corpus.done" "$work/.steps/bpe" "$src" "$tgt" "$work" "$out" \
    "$workers"
  echo "data-bin: $out; BPE codes: $work/code; sacrebleu reference: $work/test.raw.$tgt"
  echo "done in ${SECONDS}s"
}

#!/usr/bin/env bash
# Prepare IWSLT14 de-en for fairseq (fairseq's customary split); --help for usage.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare_lib.sh"

usage() {
  cat <<'EOF'
Usage: bash scripts/prepare_iwslt14.sh [--raw-dir DIR] [--out DIR] [options]

IWSLT14 de-en as fairseq's examples/translation/prepare-iwslt14.sh, with Python tooling only:
  1. downloads (resuming a partial download) or reads from --raw-dir de-en.tgz (fairseq's
     mirror of the IWSLT'14 release; no checksum is published for it);
  2. train = de-en/train.tags.de-en.* without the <url>/<talkid>/<keywords> lines and with the
     <title>/<description> tags removed; test = the segments of IWSLT14.TED.dev2010,
     IWSLT14.TEDX.dev2012 and IWSLT14.TED.tst2010-2012 (6750 sentences in the real release);
     pairs with an empty side are dropped and counted;
  3. sacremoses tokenisation, lowercased;
  4. cleans train pairs (1..--max-len tokens, ratio <= 1.5), then holds out every 23rd pair
     as valid;
  5. learns and applies a joint subword-nmt BPE;
  6. binarises with fairseq-preprocess --joined-dictionary into OUT.
Each step leaves a marker (WORK/.steps, OUT/prepare_iwslt14.done): a rerun skips finished
steps and redoes a step whose settings changed, and every step after it. The test reference
WORK/test.raw.en keeps its case: score the lowercased output with sacrebleu -lc.

Options:
  --raw-dir DIR      directory holding de-en.tgz (no download)
  --out DIR          data-bin to create (default: data-bin/iwslt14_de_en)
  --work DIR         downloads and text files (default: OUT_work)
  --bpe-merges N     joint BPE merges (default: 10000)
  --max-len N        longest kept train sentence in tokens (default: 175)
  --workers N        tokeniser and fairseq-preprocess processes (default: nproc)
  --no-verify        skip checksum verification (prints a warning)
  -h, --help         show this help
Tools: ${PYTHON:-python} (sacremoses, subword-nmt) and fairseq-preprocess from PATH.
EOF
}

prepare_archives iwslt14 de en 10000 175 data-bin/iwslt14_de_en "$@"

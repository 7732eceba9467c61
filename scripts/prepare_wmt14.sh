#!/usr/bin/env bash
# Prepare WMT14 en-de for fairseq (the Transformer-base / Difformer setup); --help for usage.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare_lib.sh"

usage() {
  cat <<'EOF'
Usage: bash scripts/prepare_wmt14.sh [--raw-dir DIR] [--out DIR] [options]

WMT14 en-de with Python tooling only (no perl):
  1. downloads (resuming a partial download) or reads from --raw-dir, and verifies:
       training-parallel-europarl-v7.tgz  training-parallel-commoncrawl.tgz
       training-parallel-nc-v9.tgz        dev.tgz (newstest2013)   test-full.tgz (newstest2014)
     (sizes/sha256 as published by tensorflow-datasets, md5 of test-full.tgz by sacrebleu);
  2. train = Europarl v7 + Common Crawl + News Commentary v9, valid = newstest2013,
     test = newstest2014 (full, 3003 sentences); pairs with an empty side are dropped and counted;
  3. sacremoses punctuation normalisation and tokenisation (aggressive dash splits, cased);
  4. cleans train pairs (1..--max-len tokens, length ratio <= 1.5);
  5. learns and applies a joint subword-nmt BPE;
  6. binarises with fairseq-preprocess --joined-dictionary into OUT.
Each step leaves a marker (WORK/.steps, OUT/prepare_wmt14.done): a rerun skips finished steps
and redoes a step whose settings changed, and every step after it.

Options:
  --raw-dir DIR      the archives above, already downloaded (no download)
  --out DIR          data-bin to create (default: data-bin/wmt14_en_de)
  --work DIR         downloads and text files (default: OUT_work)
  --bpe-merges N     joint BPE merges (default: 32768)
  --max-len N        longest kept train sentence in tokens (default: 250)
  --workers N        tokeniser and fairseq-preprocess processes (default: nproc)
  --no-verify        use archives whose checksum does not match (prints a warning)
  -h, --help         show this help
Tools: ${PYTHON:-python} (sacremoses, subword-nmt) and fairseq-preprocess from PATH.
EOF
}

prepare_archives wmt14 en de 32768 250 data-bin/wmt14_en_de "$@"

#!/usr/bin/env bash
# Train on Multi30k (de-en; SRC=en TGT=de for en-de) with the papers' settings (MODEL=difformer|seqdiffuseq, NGPU, FP16: examples/recipe.sh).
#   bash scripts/prepare_multi30k.sh --out data-bin/multi30k_de_en ... && bash examples/multi30k/train.sh && bash examples/multi30k/generate.sh
# Extra arguments go to fairseq-train.
DATASET=multi30k SRC=${SRC:-de} TGT=${TGT:-en} DATA=${DATA:-data-bin/multi30k_${SRC:-de}_${TGT:-en}}
source "$(dirname "$0")/../recipe.sh"
train "$@"

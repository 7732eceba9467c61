#!/usr/bin/env bash
# Train on IWSLT14 de-en with the papers' settings (MODEL=difformer|seqdiffuseq, NGPU, FP16: examples/recipe.sh).
#   bash scripts/prepare_iwslt14.sh ... && bash examples/iwslt14/train.sh && bash examples/iwslt14/generate.sh
# Extra arguments go to fairseq-train.
DATASET=iwslt14 SRC=${SRC:-de} TGT=${TGT:-en} DATA=${DATA:-data-bin/iwslt14_de_en}
source "$(dirname "$0")/../recipe.sh"
train "$@"

#!/usr/bin/env bash
# Average, decode and score on WMT14 en-de with the papers' settings (MODEL=difformer|seqdiffuseq, NGPU, FP16: examples/recipe.sh).
#   bash scripts/prepare_wmt14.sh ... && bash examples/wmt14/train.sh && bash examples/wmt14/generate.sh
# Extra arguments go to fairseq-generate.
DATASET=wmt14 SRC=${SRC:-en} TGT=${TGT:-de} DATA=${DATA:-data-bin/wmt14_en_de}
source "$(dirname "$0")/../recipe.sh"
generate "$@"

#!/usr/bin/env bash
# Train on Wiki-Auto (text simplification) with the papers' settings (MODEL=difformer|seqdiffuseq|diffuseq, NGPU, FP16: examples/recipe.sh).
#   bash scripts/prepare_seq2seq.sh --task wiki_auto --raw-dir DIR && bash examples/wiki_auto/train.sh && bash examples/wiki_auto/generate.sh
# Extra arguments go to fairseq-train.
DATASET=wiki_auto SRC=src TGT=trg DATA=${DATA:-data-bin/wiki_auto}
source "$(dirname "$0")/../recipe.sh"
train "$@"

#!/usr/bin/env bash
# Train on Commonsense Conversation (dialogue) with the papers' settings (MODEL=difformer|seqdiffuseq|diffuseq, NGPU, FP16: examples/recipe.sh).
#   bash scripts/prepare_seq2seq.sh --task conversation --raw-dir DIR && bash examples/conversation/train.sh && bash examples/conversation/generate.sh
# Extra arguments go to fairseq-train.
DATASET=conversation SRC=src TGT=trg DATA=${DATA:-data-bin/conversation}
source "$(dirname "$0")/../recipe.sh"
train "$@"

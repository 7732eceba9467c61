#!/usr/bin/env bash
# Train on QQP (paraphrase) with the papers' settings (MODEL=difformer|seqdiffuseq|diffuseq, NGPU, FP16: examples/recipe.sh).
#   bash scripts/prepare_seq2seq.sh --task qqp --raw-dir DIR && bash examples/qqp/train.sh && bash examples/qqp/generate.sh
# Extra arguments go to fairseq-train.
DATASET=qqp SRC=src TGT=trg DATA=${DATA:-data-bin/qqp}
source "$(dirname "$0")/../recipe.sh"
train "$@"

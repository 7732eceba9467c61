#!/usr/bin/env bash
# Average, decode and score on QQP (paraphrase) with the papers' settings (MODEL=difformer|seqdiffuseq|diffuseq, NGPU, FP16, BERTSCORE_MODEL: examples/recipe.sh).
#   bash scripts/prepare_seq2seq.sh --task qqp --raw-dir DIR && bash examples/qqp/train.sh && bash examples/qqp/generate.sh
# Extra arguments go to fairseq-generate.
DATASET=qqp SRC=src TGT=trg DATA=${DATA:-data-bin/qqp}
source "$(dirname "$0")/../recipe.sh"
generate "$@"

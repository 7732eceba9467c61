#!/usr/bin/env bash
# Average, decode and score on Quasar-T (question generation) with the papers' settings (MODEL=difformer|seqdiffuseq|diffuseq, NGPU, FP16, BERTSCORE_MODEL: examples/recipe.sh).
#   bash scripts/prepare_seq2seq.sh --task quasar_t --raw-dir DIR && bash examples/quasar_t/train.sh && bash examples/quasar_t/generate.sh
# Extra arguments go to fairseq-generate.
DATASET=quasar_t SRC=src TGT=trg DATA=${DATA:-data-bin/quasar_t}
source "$(dirname "$0")/../recipe.sh"
generate "$@"

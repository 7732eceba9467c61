#!/usr/bin/env bash
# One arm of the Multi30k de->en ablations: the small CPU model (small_model.sh) trained for the
# same number of updates with one technique changed, then the test set decoded and scored.
#   bash examples/multi30k/ablation.sh ARM[+ARM...] [fairseq-train args...]
#   bash examples/multi30k/ablation.sh table          (markdown table of every finished arm)
# ARM: base (small_model.sh: the adaptive schedule from sqrt, refit every ADAPTIVE_INTERVAL
#        updates with F re-derived from DGS_max 0.15, uniform timesteps, post-norm layers,
#        learned positions, BERT init, the affine embedding norm)
#      fF: --rescaling-factor F (f1: no noise rescaling, issue E; f2, f2.5, ...: issue I.2's F sweep)
#      dgsX: --dgs-max X, the degeneration-score threshold of the recipe's F = auto (Difformer
#        Table 17's sweep: dgs0.05, dgs0.5, ...)
#      dropX: --dropout X (the recipe's 0.1; drop0, drop0.3, ...); lenlossX: --length-loss-factor X
#        (the length predictor's weight, 0.1; lenloss0.5, ...); tokN: --max-tokens N (tokens per
#        batch, the recipe's 4096; compare at equal time, not equal updates)
#      no-bos-eos: --no-diffuse-bos-eos (the target's tokens diffused alone: the recipe before
#        session 14, which diffuses BOS and EOS around them, the Difformer authors' layout)
#      Difformer Table 7 (issue I.3): f1 (no noise rescaling), rounding (the rounding loss
#        CE(z_0·Eᵀ) instead of the anchor loss), rounding+f1, no-embed-norm, no-self-cond;
#        no-embed-norm-affine (the embedding norm without the recipe's learnt scale and shift)
#      fixed-schedule (the sqrt schedule with F from DGS_max 0.15: the recipe before session 12),
#        importance (--timestep-sampler loss-second-moment)       issue C (2x2 with base)
#      recipe search (issue I.2): slow-lr (--lr 1e-3 --warmup-updates 500: small_model.sh's
#        schedule before 2026-12-07), input-norm, no-self-cond, and the Difformer choices undone:
#        pre-norm, sinusoidal (positions), default-init, no-difformer (all three: the model
#        before 2026-12-07)
#      A+B: the arms' changes together (e.g. slow-lr+no-difformer: the recipe before 2026-12-07),
#        trained in OUT/A+B
#      diffuseq (encoder-only, 7 layers: 7.38M parameters against base's 7.51M; every target
#        padded to 48 positions, Multi30k's longest being 47, within 100 source + target) issue D
# Environment: DATA (data-bin/multi30k_de_en), TEXT (the prepare script's work dir, for
# test.raw.en; default DATA_work, as prepare_multi30k.sh writes it), OUT
# (work/multi30k_ablation), MAX_UPDATE (1455 = 12 epochs), THREADS (1), STEPS (decodings K or
# K:E with E early-stopping steps; default "5 20 20:5", the last Difformer's setting), and
# small_model.sh's ADAPTIVE_INTERVAL (110: refits at 220, 330, ...), SRC, TGT (de, en) and REF
# (the test reference, TEXT/test.raw.TGT).
# Re-running an arm resumes its training and decodes again. Pin it with taskset -c CPU.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${DATA:-$ROOT/data-bin/multi30k_de_en}
TEXT=${TEXT:-${DATA}_work}
OUT=${OUT:-$ROOT/work/multi30k_ablation}
MAX_UPDATE=${MAX_UPDATE:-1455}
STEPS=${STEPS:-5 20 20:5}
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
source "$ROOT/examples/multi30k/small_model.sh"
ARM=${1:?usage: ablation.sh ARM[+ARM...]|table [fairseq-train args...]}
shift

if [[ "$ARM" == table ]]; then
  echo "| arm | updates | train s | K | E | tokenised BLEU | sacreBLEU |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  cat "$OUT"/*/result.md 2>/dev/null
  exit 0
fi

train=("${SMALL_TRAIN[@]}")
arm=()
IFS=+ read -ra parts <<< "$ARM"
for part in "${parts[@]}"; do
  case "$part" in
    base) ;;
    f[0-9]*) arm+=(--rescaling-factor "${part#f}") ;;
    dgs[0-9]*) arm+=(--dgs-max "${part#dgs}") ;;
    drop[0-9]*) arm+=(--dropout "${part#drop}") ;;
    lenloss[0-9]*) arm+=(--length-loss-factor "${part#lenloss}") ;;
    tok[0-9]*) arm+=(--max-tokens "${part#tok}") ;;
    no-bos-eos) arm+=(--no-diffuse-bos-eos) ;;
    rounding) arm+=(--rounding-loss) ;;
    no-embed-norm) arm+=(--no-embed-norm --no-embed-norm-affine) ;;
    no-embed-norm-affine) arm+=(--no-embed-norm-affine) ;;
    slow-lr) arm+=(--lr 1e-3 --warmup-updates 500) ;;
    input-norm) arm+=(--input-norm) ;;
    pre-norm) arm+=(--no-post-norm) ;;
    sinusoidal) arm+=(--no-learned-positions) ;;
    default-init) arm+=(--no-bert-init) ;;
    no-difformer) arm+=(--no-post-norm --no-learned-positions --no-bert-init) ;;
    no-self-cond) arm+=(--no-self-cond) ;;
    fixed-schedule) arm+=(--no-adaptive-schedule) ;;
    importance) arm+=(--timestep-sampler loss-second-moment) ;;
    diffuseq) train=("${SMALL_COMMON[@]}")
      arm+=(--arch diffuseq_tiny --layers 7 --max-positions 100 --max-target-positions 48) ;;
    *) echo "error: unknown arm '$part' (base, fF (e.g. f1, f2.5), dgsX (e.g. dgs0.05), dropX, lenlossX, tokN, no-bos-eos, rounding, no-embed-norm, no-embed-norm-affine, slow-lr, input-norm, pre-norm, sinusoidal," \
         "default-init, no-difformer, no-self-cond, fixed-schedule, importance," \
         "diffuseq, joined with +; or table)" >&2
       exit 1 ;;
  esac
done

dir=$OUT/$ARM
ckpt=$dir/checkpoints/checkpoint_last.pt
mkdir -p "$dir"
updates_of() {  # the update count stored in a checkpoint (0 if there is none)
  [[ -f "$1" ]] || { echo 0; return; }
  python -c 'import sys; sys.path.insert(0, sys.argv[2]); import diffusion_plugin.checkpoints
from fairseq.checkpoint_utils import load_checkpoint_to_cpu  # the safe (weights_only) loader
print(load_checkpoint_to_cpu(sys.argv[1])["optimizer_history"][-1]["num_updates"])' "$1" "$ROOT"
}
# fairseq-train resumed at --max-update still makes one update: a finished arm is not resumed
if [[ $(updates_of "$ckpt") -lt $MAX_UPDATE ]]; then
  start=$(date +%s)
  fairseq-train "$DATA" "${train[@]}" "${arm[@]}" --save-dir "$dir/checkpoints" \
    --max-update "$MAX_UPDATE" "$@" 2>&1 | tee -a "$dir/train.log" | { grep -E "valid on|done training" || true; }
  echo $(($(cat "$dir/train_seconds" 2>/dev/null || echo 0) + $(date +%s) - start)) > "$dir/train_seconds"
fi
seconds=$(cat "$dir/train_seconds" 2>/dev/null || echo "?")  # wall seconds over all runs of the arm
updates=$(updates_of "$ckpt")
: > "$dir/result.md"
for decoding in $STEPS; do
  k=${decoding%%:*} e=0
  [[ "$decoding" == *:* ]] && e=${decoding#*:}
  name=k$k.e$e
  small_generate "$DATA" "$ckpt" "$dir/generate.$name.txt" "$k" 1 1 \
    --early-stopping-steps "$e" | tee "$dir/bleu.$name.txt"
  tok=$(grep -oE "BLEU4 = [0-9.]+" "$dir/generate.$name.txt" | cut -d' ' -f3)
  sacre=$(grep -oE "^BLEU = [0-9.]+" "$dir/bleu.$name.txt" | cut -d' ' -f3)
  echo "| $ARM | $updates | $seconds | $k | $e | $tok | $sacre |" >> "$dir/result.md"
done
cat "$dir/result.md"

"""Time per reverse step: the encoder-decoder denoiser against DiffuSeq's encoder-only one.

SeqDiffuSeq (seed 000, §5.2) reports its encoder-decoder model 3.56x faster per decoding step
than DiffuSeq at T = 2000.  Here both models decode the same sentences through fairseq's
``task.inference_step`` with K₁ and K₂ reverse steps, and the time per step is
(t(K₂) − t(K₁)) / (K₂ − K₁): what the encoder, the length prediction and the rounding cost once
per batch cancels out.  The encoder-decoder model runs its decoder over the predicted length with
the source's cross-attention keys cached; DiffuSeq runs all its layers over [source ; target
budget] at every step.  A benchmark, not a test: see bench/README.md.

    python bench/step_time.py --data DATA_BIN --encoder-decoder base.pt --diffuseq diffuseq.pt
    python bench/step_time.py --data DATA_BIN --init-untrained   # the Multi30k ablation's sizes

Untrained weights time the same as trained ones, except that the encoder-decoder model's length
predictor is then set to predict the source length (a trained one roughly does).
"""
import argparse
import logging
import warnings
from dataclasses import replace
from types import SimpleNamespace
from typing import List, Optional, Sequence, Tuple

import torch

from decode_speed import System, decoder, load_system, machine, make_batches, mean_length, measure

# examples/multi30k/small_model.sh + ablation.sh: 7.51M (3+3 layers) and 7.38M (7 layers)
WIDTH = ["--model-dim", "256", "--ffn-dim", "1024", "--attention-heads", "4", "--latent-dim", "128"]
UNTRAINED = {
    "encoder-decoder": ["--arch", "diffusion_transformer_tiny", "--encoder-layers", "3",
                        "--decoder-layers", "3", "--share-all-embeddings", *WIDTH],
    "diffuseq": ["--arch", "diffuseq_tiny", "--layers", "7", "--max-positions", "100",
                 "--max-target-positions", "48", *WIDTH],
}


def load(name: str, checkpoint: Optional[str], args: argparse.Namespace) -> System:
    """A checkpoint, or (``--init-untrained``) the ablation's model of that kind."""
    kind = "diffusion" if name == "encoder-decoder" else name  # decode_speed's length hook
    flags = ["--task", "diffusion_translation", "--user-dir", "diffusion_plugin", *UNTRAINED[name]]
    return replace(load_system(kind, checkpoint, args, flags), name=name)


def step_time(
    system: System, batch_size: int, args: argparse.Namespace
) -> Tuple[float, float, float]:
    """(seconds per reverse step per batch, sentences per batch, mean output tokens)."""
    batches = make_batches(system, batch_size, args)
    seconds = []
    for steps in args.steps:
        flags = SimpleNamespace(decoding_steps=steps, decoding_sampler="ddpm")
        generator = system.task.build_generator([system.model], flags)
        elapsed, hyps = measure(decoder(system, generator, batches), args.repeats, args.device)
        seconds.append(elapsed)
    per_step = (seconds[1] - seconds[0]) / (args.steps[1] - args.steps[0]) / len(batches)
    return per_step, sum(b["nsentences"] for b in batches) / len(batches), mean_length(hyps)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="fairseq data-bin with a joined dictionary")
    parser.add_argument("--encoder-decoder", help="diffusion_transformer checkpoint")
    parser.add_argument("--diffuseq", help="diffuseq checkpoint")
    parser.add_argument(
        "--init-untrained", action="store_true", help="untrained models where no checkpoint"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--sentences", type=int, default=64, help="sentences decoded per measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--steps", type=int, nargs=2, default=[5, 20], metavar=("K1", "K2"))
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median) after a warm-up")
    parser.add_argument("--out", help="write the markdown report here too")
    args = parser.parse_args(argv)
    if not (args.init_untrained or (args.encoder_decoder and args.diffuseq)):
        parser.error("give --encoder-decoder and --diffuseq checkpoints, or --init-untrained")
    if not 1 <= args.steps[0] < args.steps[1]:
        parser.error(f"--steps K1 K2 needs 1 <= K1 < K2, got {args.steps}")
    args.device, args.dtype = torch.device(args.device), torch.float32
    logging.disable(logging.WARNING)  # an untrained DiffuSeq never emits padding: cut warnings
    for category in (UserWarning, DeprecationWarning, FutureWarning):  # hydra / fairseq 0.12 noise
        warnings.filterwarnings("ignore", category=category)
    torch.manual_seed(1)
    systems = [
        load("encoder-decoder", args.encoder_decoder, args),
        load("diffuseq", args.diffuseq, args),
    ]
    lines: List[str] = ["# Time per reverse step: encoder-decoder vs DiffuSeq", ""]
    lines += [f"- {line}" for line in machine(args)]
    for s in systems:
        params = sum(p.numel() for p in s.model.parameters()) / 1e6
        source = "untrained" if s.untrained else "checkpoint"
        lines.append(f"- {s.name}: {params:.2f}M parameters ({source})")
    k1, k2 = args.steps
    lines.append(f"- per step: (t(K={k2}) − t(K={k1})) / {k2 - k1}, DDPM, b = 1x1")
    lines += [
        "",
        "| batch | encoder-decoder ms/step | DiffuSeq ms/step | DiffuSeq / encoder-decoder "
        "| output tokens (enc-dec / DiffuSeq) |",
        "|---:|---:|---:|---:|---|",
    ]
    for batch_size in args.batch_sizes:
        (ed, batch, ed_len), (dq, _, dq_len) = (step_time(s, batch_size, args) for s in systems)
        cells = [f"{batch:.0f}", f"{1000 * ed:.2f}", f"{1000 * dq:.2f}", f"{dq / ed:.2f}",
                 f"{ed_len:.1f} / {dq_len:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()

"""Decoding speed of the diffusion generator next to fairseq's AR transformer and CMLM.

Sentences/s at each batch size for K ∈ {1, 5, 10, 20} reverse steps and b ∈ {1x1, 3x3}
candidates per source, fairseq's transformer with beam 5 (SequenceGenerator) and CMLM with 10
iterations and length beam 5 (IterativeRefinementGenerator), all decoding the same sentences
through ``task.inference_step``; plus, per diffusion setting, the decode wall time over the time
of the bare network passes on the same batches (one ``model.encode`` + K ``model.denoise`` + one
output projection ``model.logits``), i.e. the generator's loop overhead.  A benchmark, not a
test: see bench/README.md.

    python bench/decode_speed.py --data DATA_BIN --diffusion diff.pt --ar ar.pt --cmlm cmlm.pt \
        --device cuda --out results.md
    python bench/decode_speed.py --data DATA_BIN --init-untrained --quick     # smoke run, CPU
"""
import argparse
import json
import logging
import os
import platform
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

import diffusion_plugin  # noqa: F401  (registers the task and the model with fairseq)
import fairseq
from fairseq import checkpoint_utils, options, tasks, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from diffusion_plugin.diffusion.samplers import SAMPLERS
from diffusion_plugin.models.diffusion_transformer import LENGTH_OFFSETS

STEPS = (1, 5, 10, 20)
BEAMS = ((1, 1), (3, 3))  # (length beam b1, noise beam b2)
AR_BEAM = 5
CMLM_ITERATIONS, CMLM_LENGTH_BEAM = 10, 5
TARGETS = {(10, 1): 5.0, (20, 9): 1.5}  # (K, b1·b2) -> least rate / AR beam-5 rate at batch 1
MAX_LOOP_OVERHEAD = 1.15  # decode time / bare network passes
BASELINE_TASKS = {"ar": ("translation", "transformer"), "cmlm": ("translation_lev", "cmlm_transformer")}
SYSTEMS = ("ar", "cmlm", "diffusion")


@dataclass(frozen=True)
class Size:
    layers: int
    dim: int
    ffn: int
    heads: int
    latent: int  # diffusion embedding width


SIZES = {
    "micro": Size(1, 32, 64, 2, 16),  # --quick
    "tiny": Size(2, 128, 256, 4, 64),  # diffusion_transformer_tiny
    "small": Size(3, 256, 1024, 4, 128),  # bench/run.py on Multi30k (CPU)
    "iwslt": Size(6, 512, 1024, 4, 128),  # difformer_iwslt_de_en / transformer_iwslt_de_en
    "base": Size(6, 512, 2048, 8, 128),  # difformer_wmt_en_de / transformer (base)
}


def untrained_flags(system: str, size: Size) -> List[str]:
    """fairseq-train flags that build ``system`` at ``size`` (shared embeddings: joined dict)."""
    if system == "diffusion":
        return [
            "--task", "diffusion_translation", "--arch", "diffusion_transformer_tiny",
            "--encoder-layers", str(size.layers), "--decoder-layers", str(size.layers),
            "--model-dim", str(size.dim), "--ffn-dim", str(size.ffn),
            "--attention-heads", str(size.heads), "--latent-dim", str(size.latent),
            "--diffusion-steps", "2000", "--share-all-embeddings",
        ]
    task, arch = BASELINE_TASKS[system]
    flags = ["--task", task, "--arch", arch, "--share-all-embeddings"]
    for side in ("encoder", "decoder"):
        flags += [
            f"--{side}-layers", str(size.layers), f"--{side}-embed-dim", str(size.dim),
            f"--{side}-ffn-embed-dim", str(size.ffn), f"--{side}-attention-heads", str(size.heads),
        ]
    return flags


@dataclass
class System:
    name: str
    task: Any
    model: torch.nn.Module
    untrained: bool


def load_system(
    name: str, checkpoint: Optional[str], args: argparse.Namespace, flags: Optional[List[str]] = None
) -> Optional[System]:
    """A checkpoint through load_model_ensemble_and_task, or an untrained model built from the
    fairseq-train ``flags`` (default: ``untrained_flags`` at ``--size``)."""
    if checkpoint:
        models, _, task = checkpoint_utils.load_model_ensemble_and_task(
            [checkpoint], arg_overrides={"data": args.data}
        )
        model, untrained = models[0], False
    elif args.init_untrained:
        flags = [args.data, *(flags or untrained_flags(name, SIZES[args.size]))]
        cfg = convert_namespace_to_omegaconf(
            options.parse_args_and_arch(options.get_training_parser(), input_args=flags)
        )
        task = tasks.setup_task(cfg.task)
        model, untrained = task.build_model(cfg.model), True
        predict_source_lengths(name, model)
    else:
        return None
    model.eval().to(args.device, args.dtype)
    task.load_dataset(args.subset)
    return System(name, task, model, untrained)


def predict_source_lengths(name: str, model: Any) -> None:
    """An untrained length predictor proposes arbitrary lengths (up to hundreds of tokens): make
    the non-autoregressive models predict the source length, as a trained one roughly does."""
    if name == "diffusion":  # offsets −1 (the source without its EOS), then −2 and 0, …
        with torch.no_grad():
            model.length_head.weight.zero_()
            offsets = torch.arange(LENGTH_OFFSETS) - LENGTH_OFFSETS // 2
            model.length_head.bias.copy_(-(offsets + 1).abs())
    elif name == "cmlm":  # target length (with BOS and EOS) = source length (with BOS and EOS)
        model.decoder.forward_length_prediction = lambda length_out, encoder_out, tgt_tokens=None: (
            ~encoder_out["encoder_padding_mask"][0]
        ).sum(dim=1)


def make_batches(system: System, batch_size: int, args: argparse.Namespace) -> List[Dict[str, Any]]:
    """The first ``--sentences`` of the subset in the system's own input format, sorted by source
    length (as fairseq batches them), cut into batches, on the device."""
    dataset = system.task.dataset(args.subset)
    ids = sorted(range(min(args.sentences, len(dataset))), key=lambda i: int(dataset.src_sizes[i]))
    chunks = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    return [
        utils.apply_to_sample(lambda t: t.to(args.device), dataset.collater([dataset[i] for i in chunk]))
        for chunk in chunks
    ]


# --- timing ----------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(run: Callable[[], Any], repeats: int, device: torch.device) -> Tuple[float, Any]:
    """(median wall seconds of ``repeats`` calls, output of the warm-up call)."""
    output = run()
    synchronize(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), output


def decoder(system: System, generator: Any, batches: Sequence[Dict[str, Any]]) -> Callable[[], List[Any]]:
    """Decode every batch through the task, as fairseq-generate does; returns the hypotheses."""
    return lambda: [
        hyps for batch in batches for hyps in system.task.inference_step(generator, [system.model], batch)
    ]


def bare_passes(
    model: Any, generator: Any, batches: Sequence[Dict[str, Any]], steps: int
) -> Callable[[], None]:
    """One encoder pass (and its decoding state) + ``steps`` denoiser passes + one output
    projection ẑ_0·Eᵀ at the candidates' positions (the rounding layer, which a fairseq decoder
    pass includes as its output layer; the generator applies it once) per batch, on the shapes
    the generator decodes (b1·b2 rows per source, the batch's longest candidate), inputs
    prepared beforehand."""
    dtype = next(model.parameters()).dtype
    prepared = []
    with torch.no_grad():
        slices = [src for batch in batches for _, _, src in generator.slices(batch["net_input"]["src_tokens"])]
        for src in slices:
            encoder_out = model.encode(src)
            lengths = generator.candidate_lengths(encoder_out)
            n, length = lengths.numel(), int(lengths.max())
            mask = torch.arange(length, device=src.device).unsqueeze(0) >= lengths.unsqueeze(1)
            z = torch.randn(n, length, model.cfg.latent_dim, device=src.device, dtype=dtype)
            t = torch.full((n,), model.cfg.diffusion_steps, device=src.device)
            prepared.append((src, z, t, mask))

    @torch.no_grad()
    def run() -> None:
        for src, z, t, mask in prepared:
            encoder_out = model.decoding_state(model.encode(src), generator.candidates_per_source)
            z0_hat = None
            for _ in range(steps):
                z0_hat = model.denoise(z, t, encoder_out, mask, z0_hat)
            model.logits(z0_hat[~mask])  # the generator rounds the positions within each length

    return run


# --- the three systems -----------------------------------------------------------------------


@dataclass
class Row:
    system: str
    setting: str
    batch: int
    rate: float  # sentences/s
    length: float  # mean tokens of the best hypothesis
    overhead: Optional[float] = None  # decode time / bare network passes
    steps: Optional[int] = None
    candidates: Optional[int] = None


def mean_length(hypotheses: List[List[Dict[str, Any]]]) -> float:
    return statistics.mean(h[0]["tokens"].numel() for h in hypotheses)


def bench_diffusion(system: System, batch_size: int, args: argparse.Namespace) -> List[Row]:
    batches = make_batches(system, batch_size, args)
    sentences = sum(b["nsentences"] for b in batches)
    rows = []
    for steps in STEPS:
        for b1, b2 in BEAMS:
            flags = SimpleNamespace(
                decoding_steps=steps, decoding_sampler=args.decoding_sampler, length_beam=b1, noise_beam=b2,
                dpm_solver_order=args.dpm_solver_order,
            )
            generator = system.task.build_generator([system.model], flags)
            seconds, hyps = measure(decoder(system, generator, batches), args.repeats, args.device)
            bare, _ = measure(bare_passes(system.model, generator, batches, steps), args.repeats, args.device)
            sampler = args.decoding_sampler + (f"({args.dpm_solver_order})" if args.decoding_sampler == "dpm-solver++" else "")
            setting = f"{sampler} K={steps}, b={b1}x{b2}"
            batch, rate = batches[0]["nsentences"], sentences / seconds
            length = mean_length(hyps)
            rows.append(Row("diffusion", setting, batch, rate, length, seconds / bare, steps, b1 * b2))
    return rows


def baseline_flags(name: str, max_len_a: float, max_len_b: int) -> Tuple[SimpleNamespace, str]:
    """The generation flags of the AR transformer (beam 5) or CMLM (10 iterations, length beam
    5) and their label."""
    if name == "ar":
        return SimpleNamespace(beam=AR_BEAM, max_len_a=max_len_a, max_len_b=max_len_b), f"beam {AR_BEAM}"
    flags = SimpleNamespace(
        iter_decode_max_iter=CMLM_ITERATIONS,
        iter_decode_with_beam=CMLM_LENGTH_BEAM,
        iter_decode_force_max_iter=True,
    )
    return flags, f"{CMLM_ITERATIONS} iterations, length beam {CMLM_LENGTH_BEAM}"


def bench_baseline(system: System, batch_size: int, args: argparse.Namespace) -> Row:
    flags, setting = baseline_flags(system.name, args.max_len_a, args.max_len_b)
    generator = system.task.build_generator([system.model], flags)
    batches = make_batches(system, batch_size, args)
    seconds, hyps = measure(decoder(system, generator, batches), args.repeats, args.device)
    rate = sum(b["nsentences"] for b in batches) / seconds
    return Row(system.name, setting, batches[0]["nsentences"], rate, mean_length(hyps))


# --- report ----------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(args: argparse.Namespace) -> List[str]:
    lines = [
        f"CPU: {cpu_model()} ({os.cpu_count()} logical cores), torch threads: {torch.get_num_threads()}",
        f"torch {torch.__version__}, fairseq {fairseq.__version__}, Python {platform.python_version()}",
    ]
    if args.device.type == "cuda":
        lines.append(f"GPU: {torch.cuda.get_device_name(args.device)}, CUDA {torch.version.cuda}")
    dtype = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(args.dtype, "fp32")
    data = f"{args.data}, {args.subset}, {args.sentences} sentences"
    lines.append(f"device: {args.device.type}, {dtype}; data: {data}")
    return lines


def report(rows: List[Row], systems: List[System], args: argparse.Namespace) -> str:
    ar_rate = {r.batch: r.rate for r in rows if r.system == "ar"}
    lines = ["# Decoding speed", "", *[f"- {line}" for line in machine(args)]]
    for s in systems:
        params = sum(p.numel() for p in s.model.parameters()) / 1e6
        source = f"untrained, --size {args.size}" if s.untrained else "checkpoint"
        lines.append(f"- {s.name}: {type(s.model).__name__}, {params:.2f}M parameters ({source})")
    lines += [f"- {name}: not measured: {why}" for name, why in skipped(args).items()]
    untrained = {s.name for s in systems if s.untrained}
    if untrained - {"ar"}:
        names = " and ".join(sorted(untrained - {"ar"}))
        lines.append(f"- untrained {names}: the length predictor is set to predict the source length")
    if "ar" in untrained:
        lines.append(
            "- untrained ar: it rarely emits EOS, so its output is capped at --max-len-a "
            f"{args.max_len_a} x (padded) source length + --max-len-b {args.max_len_b} tokens"
        )
    ar_length = max((r.length for r in rows if r.system == "ar"), default=0.0)
    diffusion_length = max((r.length for r in rows if r.system == "diffusion"), default=ar_length)
    if "ar" not in untrained and ar_length > 1.5 * diffusion_length:
        lines.append(
            f"- WARNING: AR hypotheses average up to {ar_length:.1f} tokens, the diffusion model's "
            f"{diffusion_length:.1f}: an AR model decoding to its max length (under-trained?) inflates "
            "the speedups; cap it with --max-len-a / --max-len-b"
        )
    lines += [
        "",
        "| system | setting | batch | sentences/s | x AR beam 5 | mean output tokens | decode / bare passes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speedup = f"{r.rate / ar_rate[r.batch]:.2f}" if r.batch in ar_rate else "-"
        overhead = "-" if r.overhead is None else f"{r.overhead:.2f}"
        cells = [r.system, r.setting, r.batch, f"{r.rate:.1f}", speedup, f"{r.length:.1f}", overhead]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "Targets (issue B):", ""]
    smallest = min(r.batch for r in rows)
    for r in rows:
        least = TARGETS.get((r.steps, r.candidates))
        if least is not None and r.batch == smallest and r.batch in ar_rate:
            ratio = r.rate / ar_rate[r.batch]
            verdict = "met" if ratio >= least else "NOT met"
            lines.append(
                f"- {r.setting}, batch {r.batch}: {ratio:.2f}x AR beam 5 (target >= {least}x): {verdict}"
            )
    overheads = [r.overhead for r in rows if r.overhead is not None]
    if overheads:
        worst = max(overheads)
        verdict = "met" if worst <= MAX_LOOP_OVERHEAD else "NOT met"
        lines.append(
            f"- loop overhead: worst decode / bare passes {worst:.2f} "
            f"(target <= {MAX_LOOP_OVERHEAD}): {verdict}"
        )
    return "\n".join(lines) + "\n"


def skipped(args: argparse.Namespace) -> Dict[str, str]:
    """Systems that cannot decode in the requested precision, and why."""
    if args.dtype != torch.bfloat16:
        return {}
    return {
        "cmlm": "fairseq 0.12's IterativeRefinementGenerator ranks its length beam with np.argmax "
        "over the scores, which numpy cannot read in bfloat16"
    }


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="fairseq data-bin with a joined dictionary")
    parser.add_argument("--diffusion", help="diffusion_translation checkpoint")
    parser.add_argument("--ar", help="translation (transformer) checkpoint")
    parser.add_argument("--cmlm", help="translation_lev (cmlm_transformer) checkpoint")
    parser.add_argument("--init-untrained", action="store_true", help="untrained models where no checkpoint")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="size of untrained models")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--fp16", action="store_true", help="half precision (CUDA only)")
    parser.add_argument(
        "--bf16", action="store_true", help="bfloat16 (CUDA, or CPUs with AVX512-BF16 / AMX)"
    )
    parser.add_argument("--decoding-sampler", choices=tuple(SAMPLERS), default="ddpm")
    parser.add_argument("--dpm-solver-order", type=int, choices=(1, 2, 3), default=2)
    parser.add_argument("--subset", default="test")
    parser.add_argument("--sentences", type=int, default=256, help="sentences decoded per measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median) after one warm-up")
    parser.add_argument("--max-len-a", type=float, help="AR max length a·x + b (default 0, untrained 1)")
    parser.add_argument("--max-len-b", type=int, help="AR max length a·x + b (default 200, untrained -1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="micro models, 8 sentences, 1 repeat")
    parser.add_argument("--out", help="write the markdown report here too")
    parser.add_argument("--json", help="write the rows here as a JSON list (bench/run.py reads it)")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.sentences, args.repeats = "micro", 8, 1
    if args.fp16 and args.device != "cuda":
        parser.error("--fp16 needs --device cuda")
    if args.fp16 and args.bf16:
        parser.error("--fp16 and --bf16 exclude each other")
    args.dtype = torch.float16 if args.fp16 else torch.bfloat16 if args.bf16 else torch.float32
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible")
    untrained_ar = args.ar is None and args.init_untrained
    if args.max_len_a is None:
        args.max_len_a = 1.0 if untrained_ar else 0.0
    if args.max_len_b is None:
        args.max_len_b = -1 if untrained_ar else 200
    args.device = torch.device(args.device)
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    logging.disable(logging.INFO)
    for category in (UserWarning, DeprecationWarning, FutureWarning):  # hydra / fairseq 0.12 noise
        warnings.filterwarnings("ignore", category=category)
    torch.manual_seed(args.seed)
    loaded = (load_system(name, getattr(args, name), args) for name in SYSTEMS if name not in skipped(args))
    systems = [s for s in loaded if s is not None]
    if not systems:
        raise SystemExit("nothing to measure: give --diffusion/--ar/--cmlm checkpoints or --init-untrained")
    rows: List[Row] = []
    for batch_size in args.batch_sizes:
        for system in systems:
            if system.name == "diffusion":
                rows += bench_diffusion(system, batch_size, args)
            else:
                rows.append(bench_baseline(system, batch_size, args))
    write_outputs(report(rows, systems, args), rows, args)


def write_outputs(text: str, rows: Sequence[Any], args: argparse.Namespace) -> None:
    """Print the markdown ``text``; write it to ``--out`` and the (dataclass) ``rows`` to ``--json``."""
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([asdict(r) for r in rows], f, indent=1)


if __name__ == "__main__":
    main()

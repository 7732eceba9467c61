#!/usr/bin/env python
"""Quality / speed frontier of one diffusion checkpoint: test sacreBLEU and sentences/s for
every sampler x steps x beams setting, next to fairseq's AR transformer (beam 5) and CMLM
(10 iterations, length beam 5) measured in the same run.

    python bench/frontier.py --data DATA_BIN --diffusion ckpt.pt --ref test.raw.en \
        [--ar ar.pt] [--cmlm cmlm.pt] [--samplers ddpm ddim dpm-solver++:2 dpm-solver++:3] \
        [--steps 1 2 3 5 10 20 50] [--beams 1x1 3x3] [--timesteps uniform] [--selection reranker] \
        [--set early_stopping_steps=5 ...] [--speed-batches 1 64] [--out report.md] [--json rows.json]
        [--plot frontier.png] [--resume]

BLEU: every sentence of ``--subset`` decoded in batches of ``--bleu-batch`` (fairseq-generate's
path: ``task.inference_step``), BPE removed, sacremoses-detokenised, sacreBLEU against ``--ref``.
Speed: the first ``--sentences`` sentences at each of ``--speed-batches`` (median of
``--repeats`` after a warm-up, as ``bench/decode_speed.py``). Pin it to a core and one thread
(``taskset -c N``, ``OMP_NUM_THREADS=1``) to compare with other single-thread runs.
``--json`` is rewritten after every point; with ``--resume`` the points already there are kept
and not measured again (rerun the same command after an interruption). ``--selection reranker``
ranks the candidates by the ``--ar`` model's length-normalised log-probability (Difformer's
AR-PPL reranking; its cost is in the timings).
"""
import argparse
import functools
import json
import os
import sys
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import text_metrics  # noqa: E402  (scripts/: detokenisation and sacreBLEU)
from decode_speed import (  # noqa: E402
    baseline_flags,
    decoder,
    load_system,
    machine,
    make_batches,
    measure,
    write_outputs,
)


@dataclass
class Point:
    system: str
    setting: str
    bleu: float
    rates: Dict[int, float]  # batch size -> sentences/s


def diffusion_settings(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """The decoding flags of every sampler x steps x beams setting (``dpm-solver++:N``: order N)."""
    settings = []
    for sampler in args.samplers:
        name, _, order = sampler.partition(":")
        for steps in args.steps:
            for beams in args.beams:
                b1, b2 = (int(b) for b in beams.split("x"))
                flags = dict(decoding_sampler=name, decoding_steps=steps, length_beam=b1, noise_beam=b2,
                             decoding_timesteps=args.timesteps)
                if order:
                    flags["dpm_solver_order"] = int(order)
                if b1 * b2 > 1:
                    flags["candidate_selection"] = args.selection
                settings.append({**flags, **args.set})
    return settings


GRID_FLAGS = ("decoding_sampler", "dpm_solver_order", "decoding_steps", "length_beam", "noise_beam",
              "decoding_timesteps", "candidate_selection")


def label(flags: Dict[str, Any]) -> str:
    """'<sampler> K=<steps>, b=<b1>x<b2>', the selection unless by score (', reranker'), then
    the --set flags (e.g. ', early_stopping_steps=5')."""
    sampler = flags["decoding_sampler"]
    if sampler == "dpm-solver++":
        sampler += f"({flags['dpm_solver_order']})"
    selection = flags.get("candidate_selection", "score")
    extra = "" if selection == "score" else f", {selection}"
    extra += "".join(f", {key}={value}" for key, value in flags.items() if key not in GRID_FLAGS)
    return f"{sampler} K={flags['decoding_steps']}, b={flags['length_beam']}x{flags['noise_beam']}{extra}"


def bleu(system: Any, generator: Any, args: argparse.Namespace, references: List[str]) -> float:
    """sacreBLEU of the best hypotheses of the whole subset (BPE removed, detokenised)."""
    every = argparse.Namespace(**{**vars(args), "sentences": len(references)})
    batches = make_batches(system, args.bleu_batch, every)
    dictionary = system.task.target_dictionary
    texts: Dict[int, str] = {}
    for batch in batches:
        hyps = system.task.inference_step(generator, [system.model], batch)
        for i, h in zip(batch["id"].tolist(), hyps):
            texts[i] = dictionary.string(h[0]["tokens"].int().cpu(), "subword_nmt")
    hypotheses = text_metrics.detokenize([texts[i] for i in range(len(references))], args.detok)
    return text_metrics.corpus_bleu(hypotheses, references)[0]


def measure_point(
    system: Any, name: str, flags: SimpleNamespace, setting: str, args: argparse.Namespace, references: List[str],
    reranker: Optional[Any] = None,
) -> Point:
    """BLEU and speeds of one setting; ``reranker``: the AR model of --candidate-selection reranker."""
    generator = system.task.build_generator([system.model] + ([reranker] if reranker is not None else []), flags)
    torch.manual_seed(args.seed)
    score = bleu(system, generator, args, references)
    rates = {}
    for batch_size in args.speed_batches:
        batches = make_batches(system, batch_size, args)
        seconds, _ = measure(decoder(system, generator, batches), args.repeats, args.device)
        rates[batch_size] = sum(b["nsentences"] for b in batches) / seconds
    point = Point(name, setting, score, rates)
    print(f"{point.system:9s} {point.setting:34s} BLEU {point.bleu:6.2f}  "
          + "  ".join(f"b{b}: {r:7.1f}/s" for b, r in rates.items()), flush=True)
    return point


def report(points: List[Point], args: argparse.Namespace) -> str:
    ar = next((p for p in points if p.system == "ar"), None)
    extra = "".join(f"; {key}={value}" for key, value in args.set.items())
    lines = ["# Quality / speed frontier", "", *[f"- {line}" for line in machine(args)],
             f"- diffusion: {args.diffusion}; BLEU: sacreBLEU on {args.subset} (detokenised) "
             f"against {args.ref}; --decoding-timesteps {args.timesteps}; multi-candidate "
             f"settings select by {args.selection}{extra}", ""]
    batches = args.speed_batches
    head = ["system", "setting", "sacreBLEU", *[f"sent/s b={b}" for b in batches]]
    if ar:
        head += [f"x AR b={b}" for b in batches]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        cells = [p.system, p.setting, f"{p.bleu:.2f}", *[f"{p.rates[b]:.1f}" for b in batches]]
        if ar:
            cells += [f"{p.rates[b] / ar.rates[b]:.2f}" for b in batches]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(points: List[Point], path: str, batch: int, subset: str) -> None:
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    curves: Dict[str, List[Point]] = {}
    for p in points:
        if p.system == "diffusion":
            sampler, beams = p.setting.split(" K=")[0], p.setting.split("b=")[1]
            curves.setdefault(f"{sampler} {beams}", []).append(p)
        else:
            ax.scatter([p.rates[batch]], [p.bleu], marker="*", s=120, label=f"{p.system} ({p.setting})")
    for name, curve in curves.items():
        ax.plot([p.rates[batch] for p in curve], [p.bleu for p in curve], marker="o", label=name)
        for p in curve:
            ax.annotate(p.setting.split(" K=")[1].split(",")[0], (p.rates[batch], p.bleu), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(f"sentences/s (batch {batch})")
    ax.set_ylabel(f"{subset} sacreBLEU")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def number_or_text(value: str) -> Any:
    """An int, a float, true/false, or the text itself."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="fairseq data-bin")
    parser.add_argument("--diffusion", required=True, help="diffusion_translation checkpoint")
    parser.add_argument("--ar", help="translation (transformer) checkpoint: beam 5 point")
    parser.add_argument("--cmlm", help="translation_lev (cmlm_transformer) checkpoint: 10 iterations point")
    parser.add_argument("--ref", required=True, help="raw (detokenised) references of --subset")
    parser.add_argument("--detok", default="en", help="sacremoses language of the hypotheses")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--samplers", nargs="+", default=["ddpm", "ddim", "dpm-solver++:2", "dpm-solver++:3"])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 3, 5, 10, 20, 50])
    parser.add_argument("--beams", nargs="+", default=["1x1", "3x3"], help="b1xb2 (length x noise)")
    parser.add_argument("--timesteps", default="uniform", choices=("uniform", "logsnr", "quadratic"))
    parser.add_argument("--selection", default="score", choices=("score", "bleu-mbr", "reranker"),
                        help="--candidate-selection of the multi-candidate settings (reranker: by the --ar model)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FLAG=VALUE",
                        help="other decoding flags for every diffusion setting, e.g. early_stopping_steps=5 ddim_eta=0.5")
    parser.add_argument("--bleu-batch", type=int, default=64)
    parser.add_argument("--speed-batches", type=int, nargs="*", default=[1, 64])
    parser.add_argument("--sentences", type=int, default=128, help="sentences timed per speed measurement")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="write the markdown table here")
    parser.add_argument("--json", help="write the points here as a JSON list")
    parser.add_argument("--plot", help="BLEU against sentences/s at the first --speed-batches size (PNG)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the points an earlier run of the same command left in --json")
    args = parser.parse_args(argv)
    if args.resume and not args.json:
        parser.error("--resume reads the points of --json: give --json")
    if args.selection == "reranker" and not args.ar:
        parser.error("--selection reranker ranks by the AR model: give its checkpoint with --ar")
    for beams in args.beams:
        parts = beams.split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            parser.error(f"--beams takes b1xb2 with positive integers, got {beams!r}")
    for sampler in args.samplers:
        name, _, order = sampler.partition(":")
        if name not in ("ddpm", "ddim", "dpm-solver++") or (order and (name != "dpm-solver++" or order not in "123")):
            parser.error(f"--samplers: ddpm, ddim or dpm-solver++:ORDER (1-3), got {sampler!r}")
    pairs = [item.partition("=") for item in args.set]
    if any(not key or not sep for key, sep, _ in pairs):
        parser.error(f"--set takes FLAG=VALUE, got {args.set}")
    args.set = {key.replace("-", "_"): number_or_text(value) for key, _, value in pairs}
    if args.plot and not args.speed_batches:
        parser.error("--plot needs a --speed-batches size")
    args.device, args.dtype = torch.device("cpu"), torch.float32
    args.init_untrained = False
    return args


def earlier_points(args: argparse.Namespace) -> Dict[tuple, Point]:
    """The points a previous run wrote to ``--json`` (with ``--resume``), by (system, setting)."""
    if not (args.resume and os.path.exists(args.json)):
        return {}
    with open(args.json, encoding="utf-8") as f:
        rows = json.load(f)
    return {(r["system"], r["setting"]): Point(r["system"], r["setting"], r["bleu"],
                                               {int(b): rate for b, rate in r["rates"].items()}) for r in rows}


def main(argv: Optional[Sequence[str]] = None) -> List[Point]:
    args = parse_args(argv)
    references = text_metrics.read_lines(args.ref)
    diffusion = load_system("diffusion", args.diffusion, args)
    sentences = len(diffusion.task.dataset(args.subset))
    if sentences != len(references):
        raise SystemExit(f"--ref has {len(references)} lines, --subset {args.subset} {sentences} sentences")
    done, points = earlier_points(args), []

    # loaded once: the AR point and the reranker of --selection reranker
    ar_system = functools.lru_cache(maxsize=None)(lambda: load_system("ar", args.ar, args))

    def add(load: Callable[[], Any], name: str, flags: SimpleNamespace, setting: str) -> None:
        point = done.get((name, setting))
        if point is None:
            reranks = getattr(flags, "candidate_selection", "score") == "reranker"
            reranker = ar_system().model if reranks else None
            point = measure_point(load(), name, flags, setting, args, references, reranker)
        points.append(point)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump([asdict(p) for p in points], f, indent=1)

    if args.ar:
        add(ar_system, "ar", *baseline_flags("ar", 0, 200))
    if args.cmlm:
        add(lambda: load_system("cmlm", args.cmlm, args), "cmlm", *baseline_flags("cmlm", 0, 200))
    for flags in diffusion_settings(args):
        add(lambda: diffusion, "diffusion", SimpleNamespace(**flags), label(flags))
    write_outputs(report(points, args), points, args)
    if args.plot:
        plot(points, args.plot, args.speed_batches[0], args.subset)
    return points


if __name__ == "__main__":
    main()

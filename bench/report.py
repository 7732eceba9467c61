"""The table and the plot of bench/run.py: every system's BLEU, decoding speed, training speed and
peak memory, with ratios to fairseq's AR transformer, read back from the stage results in OUT."""
import argparse
import json
import logging
import os
import platform
import re
import shutil
from typing import Any, Dict, List, Optional

from decode_speed import SIZES, SYSTEMS, cpu_model

NAMES = {"ar": "fairseq transformer (AR)", "cmlm": "fairseq CMLM", "diffusion": "diffusion (this plugin)"}
K10_LEAST_SPEEDUP, LEAST_BLEU_OF_AR, LEAST_WPS_OF_CMLM = 5.0, 0.97, 0.8


def load(out: str, name: str) -> Optional[Any]:
    path = os.path.join(out, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def fmt(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(value: Optional[float], reference: Optional[float]) -> Optional[float]:
    return None if value is None or not reference else value / reference


def collect(out: str) -> List[Dict[str, Any]]:
    """One row per (system, decoding setting) with everything measured for it."""
    speed = (load(out, "speed") or {}).get("rows", [])
    rows = []
    for system in SYSTEMS:
        trained = load(out, f"train.{system}") or {}
        for setting, scores in (load(out, f"bleu.{system}") or {}).items():
            rates = {
                r["batch"]: r["rate"] for r in speed
                if r["system"] == system and (system != "diffusion" or r["setting"].endswith(" " + setting))
            }
            bleu = scores.get("sacrebleu", scores.get("tok_bleu"))
            steps = re.match(r"K=(\d+), b=(\d+)x(\d+)", setting)
            rows.append({
                "system": system, "setting": setting, "bleu": bleu, **scores, "rates": rates,
                "steps": int(steps.group(1)) if steps else None,
                "candidates": int(steps.group(2)) * int(steps.group(3)) if steps else None,
                **{k: trained.get(k) for k in ("wps", "updates", "peak_memory_mb", "peak_memory_kind")},
            })
    return rows


def targets(rows: List[Dict[str, Any]], batches: List[int]) -> List[str]:
    """Issue G's targets, each with its measured ratio and, when missed, by how much."""
    ar = next((r for r in rows if r["system"] == "ar"), None)
    cmlm = next((r for r in rows if r["system"] == "cmlm"), None)
    ours = [r for r in rows if r["system"] == "diffusion"]
    if not (ar and cmlm and ours):
        return ["- (targets need all three systems)"]
    best = max(ours, key=lambda r: r["bleu"] or 0.0)
    k10 = next((r for r in ours if r["steps"] == 10 and r["candidates"] == 1), None)

    def verdict(value: Optional[float], least: float, what: str) -> str:
        if value is None:
            return f"- {what}: not measured"
        met = "met" if value >= least else f"NOT met (short by {least - value:.2f})"
        return f"- {what}: {value:.2f} (target >= {least}): {met}"

    lines = [
        verdict(ratio(best["bleu"], ar["bleu"]), LEAST_BLEU_OF_AR, f"best plugin BLEU ({best['setting']}) / AR BLEU"),
        verdict(ratio(best["bleu"], cmlm["bleu"]), 1.0, "best plugin BLEU / CMLM BLEU"),
        verdict(ratio(ours[0]["wps"], cmlm["wps"]), LEAST_WPS_OF_CMLM, "plugin training words/s / CMLM words/s"),
    ]
    if k10 and batches:
        rate = ratio(k10["rates"].get(batches[0]), ar["rates"].get(batches[0]))
        lines.append(verdict(rate, K10_LEAST_SPEEDUP, f"K=10, b=1x1 sentences/s at batch {batches[0]} / AR beam 5"))
    return lines


def table(rows: List[Dict[str, Any]], batches: List[int]) -> List[str]:
    ar = next((r for r in rows if r["system"] == "ar"), {})
    cmlm_wps = next((r["wps"] for r in rows if r["system"] == "cmlm"), None)
    head = ["system", "decoding", "sacreBLEU", "tok. BLEU", "BLEU / AR"]
    for b in batches:
        head += [f"sent/s @{b}", f"x AR @{b}"]
    head += ["train words/s", "x AR", "x CMLM", "updates", "peak MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [NAMES[r["system"]], r["setting"], fmt(r.get("sacrebleu"), 2), fmt(r.get("tok_bleu"), 2),
                 fmt(ratio(r["bleu"], ar.get("bleu")), 2)]
        for b in batches:
            cells += [fmt(r["rates"].get(b)), fmt(ratio(r["rates"].get(b), ar.get("rates", {}).get(b)), 2)]
        cells += [fmt(r["wps"], 0), fmt(ratio(r["wps"], ar.get("wps")), 2), fmt(ratio(r["wps"], cmlm_wps), 2),
                  str(r["updates"] or "-"), str(r["peak_memory_mb"] or "-")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(rows: List[Dict[str, Any]], batch: Optional[int], path: str) -> bool:
    """BLEU and sentences/s against decoding steps K, AR and CMLM as reference lines."""
    try:
        logging.getLogger("matplotlib").setLevel(logging.WARNING)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = [("bleu", "test BLEU"), ("rate", f"sentences/s at batch {batch}")]
    for ax, (key, label) in zip(axes, panels):
        def value(r: Dict[str, Any]) -> Optional[float]:
            return r["bleu"] if key == "bleu" else r["rates"].get(batch)

        for candidates, style in ((1, "o-"), (9, "s--")):
            ours = [r for r in rows if r["system"] == "diffusion" and r["candidates"] == candidates]
            points = [(r["steps"], value(r)) for r in ours if value(r) is not None]
            if points:
                ax.plot(*zip(*points), style, label=f"diffusion, b={'1x1' if candidates == 1 else '3x3'}")
        for system, color in (("ar", "tab:red"), ("cmlm", "tab:green")):
            reference = next((value(r) for r in rows if r["system"] == system), None)
            if reference is not None:
                ax.axhline(reference, color=color, linestyle=":", label=NAMES[system])
        ax.set_xlabel("decoding steps K")
        ax.set_ylabel(label)
        ax.set_xticks(sorted({r["steps"] for r in rows if r["steps"]}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Diffusion vs fairseq AR transformer (beam 5) and CMLM (10 iterations, length beam 5)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def training_budget(args: argparse.Namespace) -> str:
    """The training budget of every system, as the report states it."""
    if args.quick:
        return "10 updates (--quick)"
    parts = ([f"{args.max_update} updates"] if args.max_update else []) + (
        [f"{args.minutes:g} min"] if args.minutes is not None else [])
    return " or ".join(parts) + " of training each" + (", whichever came first" if len(parts) > 1 else "")


def header(args: argparse.Namespace) -> List[str]:
    import fairseq
    import torch

    size = SIZES[args.size]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    device = f"{args.device}" + (" fp16" if args.fp16 else "")
    if args.device == "cuda" and torch.cuda.is_available():
        device += f" ({torch.cuda.get_device_name()})"
    return [
        f"# Benchmark {args.date}: {device}",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores, run pinned to cores {cores} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'default')})",
        f"- torch {torch.__version__}, fairseq {fairseq.__version__}, Python {platform.python_version()}",
        f"- data: {args.data} ({args.source_lang}->{args.target_lang}), test subset `{args.subset}`; "
        f"sacreBLEU on detokenised output against {args.ref or '(no --ref: tokenised BLEU only)'}",
        *([f"- CMLM and diffusion trained on {args.nat_data} (sequence-level distilled), AR on {args.data}"]
          if args.nat_data else []),
        f"- every system: {size.layers}+{size.layers} layers, width {size.dim}, ffn {size.ffn}, {size.heads} heads "
        f"(diffusion latent {size.latent}), shared embeddings, Adam inverse_sqrt (AR, CMLM: lr 1e-3 after 500 "
        f"warm-up updates; diffusion: lr 2e-3 after 200, post-norm, learned positions, BERT init), "
        f"max 4096 tokens, dropout 0.1, " + training_budget(args),
        f"- logs, checkpoints and stage results: {args.out}",
    ]

def write_report(args: argparse.Namespace) -> str:
    rows = collect(args.out)
    batches = sorted({b for r in rows for b in r["rates"]})
    signature = next((r["signature"] for r in rows if r.get("signature")), None)
    lines = header(args) + [""] + table(rows, batches) + [""]
    if signature:
        lines += [f"sacreBLEU signature: `{signature}`", ""]
    lines += [
        "Training words/s: mean of fairseq's per-100-update `wps`; peak memory: "
        + (rows[0]["peak_memory_kind"] if rows else "-")
        + "; decoding sentences/s: bench/decode_speed.py (`<this report>-speed.md` has its full table, with the loop overhead).",
        "",
        "Targets (issue G):",
        "",
        *targets(rows, batches),
    ]
    text = "\n".join(lines) + "\n"
    os.makedirs(args.results, exist_ok=True)
    stem = os.path.join(args.results, f"{args.date}-{args.device}" + ("-quick" if args.quick else ""))
    for path in (stem + ".md", os.path.join(args.out, "report.md")):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    speed = os.path.join(args.out, "speed.md")
    if os.path.exists(speed):
        shutil.copyfile(speed, stem + "-speed.md")
    if plot(rows, batches[0] if batches else None, stem + ".png"):
        print(f"[bench] plot: {stem}.png")
    print(text)
    return text

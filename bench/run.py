"""The benchmark: this plugin against fairseq's AR transformer and CMLM on the same data, machine,
model size and wall-clock training budget (issue G).  See bench/README.md.

    python bench/run.py --data DATA_BIN --device cpu --minutes 30 --size small \
        --ref RAW_TEST_REF --detok en --out bench/runs/multi30k-cpu

Stages, each resumable (a finished stage leaves a ``.json`` in OUT and is skipped on rerun):
train (each system for ``--minutes`` of fairseq's cumulative training time, one optimiser recipe),
bleu (fairseq-generate on the test set: tokenised BLEU, sacrebleu on detokenised output),
speed (bench/decode_speed.py on the trained checkpoints), report (markdown + PNG into
``bench/results/<date>-<device>.md|png`` and OUT).
"""
import argparse
import datetime
import filecmp
import json
import os
import re
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from decode_speed import BASELINE_TASKS, SIZES, SYSTEMS, untrained_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(ROOT, "diffusion_plugin")
OPTIMISER = [
    "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--weight-decay", "0.01", "--clip-norm", "1.0",
    "--lr-scheduler", "inverse_sqrt", "--dropout", "0.1", "--max-tokens", "4096",
]
# each system's own recipe: fairseq's usual lr 1e-3 after 500 warm-up updates for AR and CMLM; the
# plugin's examples/multi30k/small_model.sh (lr 2e-3 after 200, Difformer's post-norm layers,
# learned positions and BERT initialisation, the adaptive schedule refit every 110 updates from
# update 220, the affine embedding norm, BOS and EOS diffused; tests/test_bench.py checks the two agree)
RECIPES = {
    "ar": ["--lr", "1e-3", "--warmup-updates", "500"],
    "cmlm": ["--lr", "1e-3", "--warmup-updates", "500"],
    "diffusion": ["--lr", "2e-3", "--warmup-updates", "200", "--post-norm", "--learned-positions", "--bert-init",
                  "--adaptive-schedule", "--adaptive-warmup-updates", "110", "--adaptive-update-interval", "110",
                  "--embed-norm-affine", "--diffuse-bos-eos"],
}
CRITERIA = {
    "ar": ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"],
    "cmlm": ["--criterion", "nat_loss", "--noise", "random_mask", "--label-smoothing", "0.1",
             "--length-loss-factor", "0.1"],
    "diffusion": ["--user-dir", PLUGIN, "--criterion", "diffusion_loss", "--label-smoothing", "0.1",
                  "--length-loss-factor", "0.1", "--rescaling-factor", "auto", "--dgs-max", "0.15"],
}
DIFFUSION_STEPS = (5, 10, 20)
DIFFUSION_BEAMS = ((1, 1), (3, 3))


def decoding_settings(system: str, quick: bool) -> List[Tuple[str, List[str]]]:
    """(name, fairseq-generate flags) of every decoding setting benchmarked for ``system``."""
    if system == "ar":
        return [("beam 5", ["--beam", "5"] + (["--max-len-a", "1", "--max-len-b", "5"] if quick else []))]
    if system == "cmlm":
        return [("10 iter, length beam 5",
                 ["--iter-decode-max-iter", "10", "--iter-decode-with-beam", "5", "--iter-decode-force-max-iter"])]
    return [
        (f"K={k}, b={b1}x{b2}", ["--decoding-steps", str(k), "--length-beam", str(b1), "--noise-beam", str(b2)])
        for k in DIFFUSION_STEPS for b1, b2 in DIFFUSION_BEAMS
    ]


# --- stages ----------------------------------------------------------------------------------


def run_logged(command: Sequence[str], log: str) -> str:
    """Run ``command`` with stdout+stderr into ``log``; its text, or an error naming the log."""
    with open(log, "w", encoding="utf-8") as f:
        code = subprocess.call(list(command), stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    text = open(log, encoding="utf-8").read()
    if code != 0:
        tail = "\n".join(text.splitlines()[-15:])
        raise SystemExit(f"failed ({code}): {' '.join(command)}\n--- {log} (tail) ---\n{tail}")
    return text


def device_flags(args: argparse.Namespace) -> List[str]:
    return ["--cpu"] if args.device == "cpu" else (["--fp16"] if args.fp16 else [])


def checkpoint(args: argparse.Namespace, system: str) -> str:
    return os.path.join(args.out, "checkpoints", system, "checkpoint_last.pt")


def train_stats(log_text: str) -> Dict[str, Any]:
    """Training words/s (mean of fairseq's per-interval ``wps`` after the first interval), updates,
    wall seconds and peak memory, read from a ``--log-format simple`` training log."""
    wps = [float(v) for v in re.findall(r"\bwps=([\d.]+)", log_text)]
    updates = re.findall(r"num_updates[= ](\d+)", log_text)
    wall = re.search(r"done training in ([\d.]+) seconds", log_text)
    peak = re.search(r"peak_memory_mb=(\d+) \(([^)]*)\)", log_text)
    return {
        "wps": sum(wps[1:]) / len(wps[1:]) if len(wps) > 1 else (wps[0] if wps else None),
        "updates": int(updates[-1]) if updates else 0,
        "train_seconds": float(wall.group(1)) if wall else None,
        "peak_memory_mb": int(peak.group(1)) if peak else None,
        "peak_memory_kind": peak.group(2) if peak else None,
    }


def train(args: argparse.Namespace, system: str) -> Dict[str, Any]:
    budget = ["--max-update", str(args.max_update)] if args.max_update else []
    if args.minutes is not None:
        budget += ["--stop-time-hours", f"{args.minutes / 60:.6f}"]
    if args.snapshot_updates:
        budget += ["--save-interval-updates", str(args.snapshot_updates)]
    data = args.nat_data if args.nat_data and system != "ar" else args.data
    command = [
        sys.executable, os.path.join(ROOT, "bench", "train.py"), data,
        "--source-lang", args.source_lang, "--target-lang", args.target_lang,
        *untrained_flags(system, SIZES[args.size]), *CRITERIA[system], *OPTIMISER, *RECIPES[system],
        *(["--warmup-updates", "5"] if args.quick else []), "--seed", str(args.seed), *device_flags(args),
        *budget,
        "--save-dir", os.path.dirname(checkpoint(args, system)), "--no-epoch-checkpoints",
        "--disable-validation", "--log-format", "simple", "--log-interval", str(args.log_interval),
    ]
    text = run_logged(command, os.path.join(args.out, "logs", f"{system}.train.log"))
    return {"command": command[1:], **train_stats(text)}


def slug(setting: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", setting).strip("_")


def bleu(args: argparse.Namespace, system: str) -> Dict[str, Any]:
    """Test BLEU of every decoding setting: fairseq's tokenised BLEU4 and, with ``--ref``, sacrebleu
    on the detokenised ``D-`` lines (scripts/bleu.py)."""
    task = BASELINE_TASKS[system][0] if system in BASELINE_TASKS else "diffusion_translation"
    results = {}
    for setting, flags in decoding_settings(system, args.quick):
        log = os.path.join(args.out, "logs", f"{system}.{slug(setting)}.generate.txt")
        text = run_logged([
            "fairseq-generate", args.data, "--user-dir", PLUGIN, "--task", task, "--path", checkpoint(args, system),
            "--source-lang", args.source_lang, "--target-lang", args.target_lang, "--gen-subset", args.subset,
            "--batch-size", "128", "--required-batch-size-multiple", "1", "--remove-bpe", "--seed", str(args.seed), *device_flags(args), *flags,
        ], log)
        found = re.search(r"BLEU4? = ([\d.]+)", text)
        result: Dict[str, Any] = {"tok_bleu": float(found.group(1)) if found else None}
        if args.ref:
            detok = ["--detok", args.detok] if args.detok else []
            scored = run_logged(
                [sys.executable, os.path.join(ROOT, "scripts", "bleu.py"), log, "--ref", args.ref, *detok],
                log.replace(".generate.txt", ".sacrebleu.txt"),
            )
            result["sacrebleu"] = float(re.search(r"^BLEU = ([\d.]+)", scored, re.M).group(1))
            result["signature"] = re.search(r"^(nrefs:\S+)", scored, re.M).group(1)
        results[setting] = result
    return results


def speed(args: argparse.Namespace) -> Dict[str, Any]:
    """bench/decode_speed.py on the trained checkpoints; its rows as a list of dicts."""
    out = os.path.join(args.out, "speed.json")
    command = [
        sys.executable, os.path.join(ROOT, "bench", "decode_speed.py"), "--data", args.data,
        *[a for s in SYSTEMS for a in (f"--{s}", checkpoint(args, s))], "--device", args.device,
        "--subset", args.subset, "--sentences", str(args.speed_sentences), "--repeats", str(args.repeats),
        "--out", os.path.join(args.out, "speed.md"), "--json", out,
    ]
    if args.fp16:
        command.append("--fp16")
    if args.quick:
        command += ["--max-len-a", "1", "--max-len-b", "5"]
    run_logged(command, os.path.join(args.out, "logs", "speed.log"))
    with open(out, encoding="utf-8") as f:
        return {"rows": json.load(f)}


def stage(args: argparse.Namespace, name: str, compute) -> Any:
    """Load ``OUT/<name>.json`` if a previous run finished it, else compute and save it."""
    path = os.path.join(args.out, f"{name}.json")
    if os.path.exists(path):
        print(f"[bench] {name}: done before, reading {path}", flush=True)
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    print(f"[bench] {name} ...", flush=True)
    result = compute()
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return result


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="fairseq data-bin with a joined dictionary")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--nat-data", metavar="DATA_BIN",
                        help="train the non-autoregressive systems (CMLM, diffusion) on this data-bin, e.g. "
                             "sequence-level distilled by scripts/distill.sh; its dictionaries must be --data's, "
                             "and every system is still tested on --data")
    parser.add_argument("--fp16", action="store_true", help="half precision (CUDA only)")
    parser.add_argument("--minutes", type=float,
                        help="training wall clock per system (default 30 without --max-update)")
    parser.add_argument("--max-update", type=int,
                        help="train every system for this many updates (with --minutes: whichever comes first)")
    parser.add_argument("--snapshot-updates", type=int, metavar="N",
                        help="also keep checkpoint_E_U.pt every N updates U (equal-update comparisons, "
                             "e.g. with examples/multi30k/ablation.sh arms); fairseq saves none at an "
                             "update that ends an epoch")
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="model size of every system")
    parser.add_argument("--quick", action="store_true", help="micro models, 10 updates, 8 sentences for speed: proves the harness")
    parser.add_argument("--out", help="run folder (logs, checkpoints, stage results); default bench/runs/<date>-<device>")
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "results"), help="report folder")
    parser.add_argument("--source-lang", default="de")
    parser.add_argument("--target-lang", default="en")
    parser.add_argument("--ref", help="raw (detokenised) test references for sacrebleu")
    parser.add_argument("--detok", metavar="LANG", help="sacremoses-detokenise hypotheses before sacrebleu")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--stages", nargs="+", choices=("train", "bleu", "speed", "report"),
                        default=["train", "bleu", "speed", "report"])
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--cpus", help="pin every process to these cores, e.g. 0 or 0-1 (Linux)")
    parser.add_argument("--speed-sentences", type=int, default=128, help="sentences per speed measurement")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per speed measurement")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    args.date = datetime.date.today().isoformat()
    if args.max_update is not None and args.max_update < 1:
        parser.error(f"--max-update must be >= 1, got {args.max_update}")
    if args.snapshot_updates is not None and args.snapshot_updates < 1:
        parser.error(f"--snapshot-updates must be >= 1, got {args.snapshot_updates}")
    if args.minutes is not None and args.minutes <= 0:
        parser.error(f"--minutes must be > 0, got {args.minutes}")
    if args.minutes is None and args.max_update is None:
        args.minutes = 30.0
    args.log_interval = 5 if args.quick else 100
    if args.quick:
        args.max_update = 10
    if args.quick:
        args.size, args.speed_sentences = "micro", 8
    if args.fp16 and args.device != "cuda":
        parser.error("--fp16 needs --device cuda")
    if args.detok and not args.ref:
        parser.error("--detok needs --ref")
    if args.nat_data:
        for lang in (args.source_lang, args.target_lang):
            ours, theirs = (os.path.join(d, f"dict.{lang}.txt") for d in (args.data, args.nat_data))
            if not os.path.exists(theirs) or not filecmp.cmp(ours, theirs, shallow=False):
                parser.error(f"--nat-data {args.nat_data}: dict.{lang}.txt missing or not --data's; "
                             "binarise it with --srcdict/--tgtdict of --data")
    args.out = os.path.abspath(args.out or os.path.join(ROOT, "bench", "runs", f"{args.date}-{args.device}"))
    if args.cpus:
        cores = parse_cores(args.cpus)
        os.sched_setaffinity(0, cores)  # inherited by every stage's subprocess
        os.environ["OMP_NUM_THREADS"] = str(len(cores))
    return args


def parse_cores(spec: str) -> set:
    cores = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cores.update(range(int(low), int(high or low) + 1))
    return cores


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
    results: Dict[str, Any] = {}
    for system in args.systems if "train" in args.stages else ():
        results[f"train.{system}"] = stage(args, f"train.{system}", lambda: train(args, system))
    for system in args.systems if "bleu" in args.stages else ():
        results[f"bleu.{system}"] = stage(args, f"bleu.{system}", lambda: bleu(args, system))
    if "speed" in args.stages:
        results["speed"] = stage(args, "speed", lambda: speed(args))
    if "report" in args.stages:
        from report import write_report

        write_report(args)


if __name__ == "__main__":
    main()

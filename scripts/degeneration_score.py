#!/usr/bin/env python
"""Difformer degeneration score (DGS) and rescaling-factor search (paper App. D, Table 19).

Examples (from the repository root)::

    python scripts/degeneration_score.py --schedule sqrt --vocab-size 10000 --dim 128 --dgs-max 0.15
    python scripts/degeneration_score.py --schedule sqrt --vocab-size 10000 --dim 128 --factor 1
    python scripts/degeneration_score.py --table
    python scripts/degeneration_score.py --schedule sqrt --plot dgs_t.png

The search prints ``rescaling_factor=<F> dgs=<DGS>`` as its last line; ``--table`` prints Table 19
('-': F = 1 already satisfies DGS_max, i.e. no rescaling is needed).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Callable, List, NoReturn, Optional, Sequence

import checkout  # noqa: F401  (the plugin from this checkout when not installed)

from diffusion_plugin.diffusion import degeneration as dg  # noqa: E402
from diffusion_plugin.diffusion.schedules import SCHEDULES, alphas_cumprod  # noqa: E402

TABLE_THRESHOLDS = (0.05, 0.10, 0.15, 0.20, 0.30, 0.50)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _float(low: float, high: Optional[float], low_open: bool, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        ok = value == value and (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and value < high
        if not ok or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_dgs_max = _float(0.0, 1.0, True, "a DGS_max in the open interval (0, 1)")
_nonneg = _float(0.0, None, False, "a finite number >= 0")
_positive = _float(0.0, None, True, "a finite number > 0")


def _list(item: Callable[[str], object]) -> Callable[[str], list]:
    def parse(text: str) -> list:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        return [item(p) for p in parts]

    return parse


def _schedule(text: str) -> str:
    if text not in SCHEDULES:
        raise argparse.ArgumentTypeError(
            f"unknown schedule {text!r}; choose from {', '.join(SCHEDULES)}"
        )
    return text


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit status 2), without the usage block."""

    def error(self, message: str) -> "NoReturn":
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=os.path.basename(__file__),
        description="Difformer degeneration score and rescaling-factor search (Algorithms 1-2).",
    )
    p.add_argument("--schedule", type=_schedule, default="sqrt", help="noise schedule (default sqrt)")
    p.add_argument("--steps", type=_positive_int, default=2000, help="diffusion steps T (2000)")
    p.add_argument("--vocab-size", type=_positive_int, default=10000, help="V (10000)")
    p.add_argument("--dim", type=_positive_int, default=128, help="embedding dimension d (128)")
    p.add_argument("--dgs-max", type=_dgs_max, default=0.15, help="threshold DGS_max (0.15)")
    p.add_argument("--factor", type=_nonneg, help="only compute the DGS at this rescaling factor F")
    p.add_argument("--vp", action="store_true", help="variance-preserving rescaling (Eq. 8)")
    p.add_argument("--rule", choices=dg.RULES, default=dg.DEFAULT_RULE,
                   help=f"reading of the degenerated model (default {dg.DEFAULT_RULE})")
    p.add_argument("--step", type=_positive, default=0.5, help="search interval ΔF (0.5)")
    p.add_argument("--start", type=_nonneg, default=1.0, help="first F of the search (1)")
    p.add_argument("--max-factor", type=_positive, default=dg.DEFAULT_MAX_FACTOR,
                   help=f"give up above this F ({dg.DEFAULT_MAX_FACTOR:g})")
    p.add_argument("--bisection", action="store_true", help="bisect on the ΔF grid (same answer)")
    p.add_argument("--seed", type=int, default=0, help="Monte-Carlo seed (0)")
    p.add_argument("--sigma-e", type=_positive, default=1.0, help="embedding std σ_e (1)")
    p.add_argument("--num-queries", type=_positive_int, default=dg.DEFAULT_NUM_QUERIES,
                   help=f"query tokens sampled from the V embeddings ({dg.DEFAULT_NUM_QUERIES})")
    p.add_argument("--all-queries", action="store_true", help="use every token as a query (Alg. 2)")
    p.add_argument("--draws", type=_positive_int, default=1, help="noise draws N per query token (1)")
    p.add_argument("--num-timesteps", type=_positive_int, default=dg.DEFAULT_NUM_TIMESTEPS,
                   help="evenly spaced timesteps of 0..T, ends included, for the mean "
                        f"(default {dg.DEFAULT_NUM_TIMESTEPS}: {{0, 40, ..., 2000}} for T=2000)")
    p.add_argument("--all-timesteps", action="store_true", help="average over every t = 0..T")
    p.add_argument("--table", action="store_true", help="print Table 19")
    p.add_argument("--schedules", type=_list(_schedule), default=["linear", "cosine", "sqrt"],
                   help="schedules of --table / --plot (linear,cosine,sqrt)")
    p.add_argument("--vocab-sizes", type=_list(_positive_int), default=[10000, 20000, 40000],
                   help="vocabulary sizes of --table (10000,20000,40000)")
    p.add_argument("--thresholds", type=_list(_dgs_max), default=list(TABLE_THRESHOLDS),
                   help="DGS_max rows of --table (0.05,0.10,0.15,0.20,0.30,0.50)")
    p.add_argument("--plot", metavar="PNG", help="draw DGS_t against t (paper Fig. 2b/2c)")
    p.add_argument("--plot-factors", type=_list(_nonneg), default=[1, 2, 3, 4, 5],
                   help="rescaling factors of the --plot panel for --schedule (1,2,3,4,5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


class _Progress:
    """tqdm over the Monte-Carlo samples (a no-op without tqdm or with --no-progress)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc="DGS samples", unit="smp", leave=False)
            except ImportError:
                pass

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _short(vocab: int) -> str:
    return f"{vocab // 1000}K" if vocab % 1000 == 0 else str(vocab)


def format_table(
    results: dict, schedules: Sequence[str], vocab_sizes: Sequence[int], thresholds: Sequence[float]
) -> str:
    """Table 19 layout: one row per DGS_max, one column per (schedule, V); '-' = no rescaling."""
    width = 7
    head1 = "DGS_max".ljust(9) + "".join(s.capitalize().ljust(width * len(vocab_sizes)) for s in schedules)
    head2 = " " * 9 + "".join(_short(v).ljust(width) for _ in schedules for v in vocab_sizes)
    lines = [head1.rstrip(), head2.rstrip()]
    for th in thresholds:
        cells = []
        for s in schedules:
            for v in vocab_sizes:
                res = results[(s, v, th)]
                cells.append(("-" if res is None else f"{res.factor:.1f}").ljust(width))
        lines.append((f"{th:.2f}".ljust(9) + "".join(cells)).rstrip())
    return "\n".join(lines)


def _estimator_kwargs(args: argparse.Namespace) -> dict:
    return dict(
        rule=args.rule,
        sigma_e=args.sigma_e,
        num_queries=None if args.all_queries else args.num_queries,
        draws=args.draws,
        seed=args.seed,
    )


def _samples(args: argparse.Namespace, vocab: int) -> int:
    queries = vocab if args.all_queries else min(args.num_queries, vocab)
    return queries * args.draws


def run(args: argparse.Namespace) -> List[str]:
    kwargs = _estimator_kwargs(args)
    if args.all_timesteps:
        args.num_timesteps = None
    out: List[str] = []
    if args.table:
        total = sum(_samples(args, v) for v in args.vocab_sizes)
        bar = _Progress(total, not args.no_progress)
        t0 = time.perf_counter()
        try:
            results = dg.rescaling_table(
                args.schedules, args.vocab_sizes, args.thresholds, dim=args.dim, steps=args.steps,
                step=args.step, max_factor=args.max_factor, bisection=args.bisection,
                variance_preserving=args.vp, num_timesteps=args.num_timesteps, progress=bar,
                start=args.start, **kwargs,
            )
        finally:
            bar.close()
        out.append(format_table(results, args.schedules, args.vocab_sizes, args.thresholds))
        out.append(
            f"# d={args.dim} T={args.steps} timesteps={args.num_timesteps or 'all'} "
            f"step={args.step:g} rule={args.rule} vp={args.vp} "
            f"samples/V={_samples(args, args.vocab_sizes[0])} seed={args.seed} "
            f"time={time.perf_counter() - t0:.1f}s"
        )
        return out
    bar = _Progress(_samples(args, args.vocab_size), not args.no_progress)
    try:
        est = dg.get_estimator(args.vocab_size, args.dim, progress=bar, **kwargs)
    finally:
        bar.close()
    table = alphas_cumprod(args.schedule, args.steps)
    curve = est.curve(table, variance_preserving=args.vp, num_timesteps=args.num_timesteps)
    if args.plot:
        plot(args, est, curve)
        out.append(f"# wrote {args.plot}")
    if args.factor is not None:
        out.append(f"rescaling_factor={args.factor:g} dgs={curve(args.factor):.4f}")
        return out
    factor, dgs, seen = dg.search_on_curve(
        curve, args.dgs_max, step=args.step, max_factor=args.max_factor,
        bisection=args.bisection, start=args.start,
    )
    out.append(f"# evaluated {len(seen)} factors; DGS(F={args.start:g})={curve(args.start):.4f}")
    out.append(f"rescaling_factor={factor:g} dgs={dgs:.4f}")
    return out


def plot(args: argparse.Namespace, est: "dg.DegenerationEstimator", curve: "dg.DGSCurve") -> None:
    """Fig. 2b (DGS_t of each schedule, F = 1) and Fig. 2c (--schedule rescaled by several F)."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq may leave the root at DEBUG
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib (pip install matplotlib)") from None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for name in args.schedules:
        c = est.curve(alphas_cumprod(name, args.steps), variance_preserving=args.vp,
                      num_timesteps=args.num_timesteps)
        axes[0].plot(c.timesteps / args.steps, c.per_t(1.0), label=f"{name} (DGS={c(1.0):.2f})")
    axes[0].set_title(f"DGS_t, F = 1 (V={args.vocab_size}, d={args.dim})")
    for f in args.plot_factors:
        axes[1].plot(curve.timesteps / args.steps, curve.per_t(f), label=f"F={f:g} (DGS={curve(f):.2f})")
    axes[1].set_title(f"{args.schedule} rescaled" + (" (VP, Eq. 8)" if args.vp else " (Eq. 3)"))
    for ax in axes:
        ax.set_xlabel("t / T")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("DGS_t")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.start > args.max_factor:
        parser.error(f"--start ({args.start:g}) must not exceed --max-factor ({args.max_factor:g})")
    try:
        lines = run(args)
    except ValueError as err:  # bad combinations and an unreachable DGS_max: one line, no traceback
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Plot the adaptive token-level noise schedule of a checkpoint (SeqDiffuSeq Fig. 2).

    python scripts/plot_schedule.py checkpoints/seqdiffuseq/checkpoint_last.pt -o schedule.png

Left: ᾱ[t, i] against t for several target positions i, the initial named schedule dashed.
Middle: the mean denoising loss ‖ẑ_0^i − z_0^i‖²/d per timestep bucket and position that the last
refit used (recorded under the previous schedule).  Right: the same loss recorded since the last
refit, under the current schedule (the refit aims to make it linear in t).
"""
import argparse
import logging
import os
import sys
from typing import List, Optional, Sequence

import torch

import checkout  # noqa: F401  (the plugin from this checkout when not installed)

from diffusion_plugin.diffusion.schedules import alphas_cumprod  # noqa: E402

PREFIX = "schedule."


def load_schedule(path: str) -> dict:
    """The adaptive-schedule buffers and schedule settings of a fairseq checkpoint."""
    from fairseq import checkpoint_utils

    import diffusion_plugin.checkpoints  # noqa: F401  (safe loading of fairseq checkpoints)

    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    model = {k[len(PREFIX):]: v for k, v in state["model"].items() if k.startswith(PREFIX)}
    if "alpha_bar_table" not in model:
        raise ValueError(
            f"{path} has no adaptive noise schedule (it was trained without --adaptive-schedule)"
        )
    cfg = state["cfg"]["model"]
    model.update(
        name=str(cfg.noise_schedule),
        steps=int(cfg.diffusion_steps),
        bucket_size=int(cfg.adaptive_bucket_size),
        updates=int(state["optimizer_history"][-1]["num_updates"]),
    )
    return model


def default_positions(count: torch.Tensor, wanted: int = 6) -> List[int]:
    """Up to ``wanted`` evenly spread positions among those with recorded losses (else the first)."""
    observed = (count.sum(dim=0) > 0).nonzero().flatten().tolist() or list(range(count.size(1)))
    step = max(1, len(observed) // wanted)
    return observed[::step][:wanted]


def plot(schedule: dict, positions: Sequence[int], out: str) -> None:
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = schedule["alpha_bar_table"].double()
    steps, size = schedule["steps"], schedule["bucket_size"]
    t = torch.arange(steps + 1)
    centres = torch.arange(schedule["loss_sum"].size(0)) * size + (size + 1) / 2
    colours = plt.cm.viridis(torch.linspace(0, 0.9, len(positions)).tolist())
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(t, alphas_cumprod(schedule["name"], steps), "k--", label=f"initial ({schedule['name']})")
    panels = [
        (axes[1], "fit_loss_sum", "fit_loss_count", f"loss used by the last refit (update {int(schedule['last_refit'])})"),
        (axes[2], "loss_sum", "loss_count", f"loss since the last refit (to update {schedule['updates']})"),
    ]
    for position, colour in zip(positions, colours):
        label = f"position {position}"
        axes[0].plot(t, table[:, position], color=colour, label=label)
        for ax, sums, counts, _ in panels:
            count = schedule[counts][:, position]
            seen = count > 0
            loss = schedule[sums][:, position][seen] / count[seen]
            ax.plot(centres[seen], loss, ".-", color=colour, label=label)
    axes[0].set(title="adaptive schedule ᾱ[t, i]", xlabel="timestep t", ylabel="ᾱ")
    for ax, _, counts, title in panels:
        ax.set(title=title, xlabel=f"timestep t (buckets of {size})", ylabel="mean ‖ẑ₀ − z₀‖²/d")
        if not bool((schedule[counts] > 0).any()):
            ax.text(0.5, 0.5, "no losses recorded", ha="center", transform=ax.transAxes)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="fairseq checkpoint trained with --adaptive-schedule")
    parser.add_argument("-o", "--output", default="schedule.png", help="PNG file to write")
    parser.add_argument(
        "--positions", type=int, nargs="+", help="target positions to draw (default: up to 6 observed)"
    )
    args = parser.parse_args(argv)
    try:
        schedule = load_schedule(args.checkpoint)
        columns = schedule["alpha_bar_table"].size(1)
        positions = args.positions or default_positions(schedule["fit_loss_count"] + schedule["loss_count"])
        bad = [p for p in positions if not 0 <= p < columns]
        if bad:
            raise ValueError(f"--positions {bad} outside the table's positions 0..{columns - 1}")
        plot(schedule, positions, args.output)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    print(f"wrote {args.output}: positions {list(positions)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

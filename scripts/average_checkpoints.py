#!/usr/bin/env python
"""Average the model weights of fairseq checkpoints (ve-fairseq ships no scripts/ directory).

    python scripts/average_checkpoints.py --inputs CKPT_DIR --num-update-checkpoints 5 --output avg.pt
    python scripts/average_checkpoints.py --inputs a.pt b.pt c.pt --output avg.pt

Loads with the plugin's safe loader (``weights_only``, clear errors for truncated files).
Floating-point tensors are averaged in float64 and cast back; other tensors (step counters)
must agree or are taken from the newest checkpoint.  The output is the newest checkpoint with
its ``model`` replaced, so fairseq-generate reads it like any other.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

import checkout  # noqa: E402,F401  (the plugin from this checkout when not installed)
from diffusion_plugin.checkpoints import check_checkpoint_file  # noqa: E402


def last_checkpoints(directory: Path, n: int, by_update: bool) -> list[Path]:
    """The ``n`` newest ``checkpoint_<epoch>.pt`` or ``checkpoint_<e>_<update>.pt`` files."""
    pattern = re.compile(r"checkpoint_\d+_(\d+)\.pt$" if by_update else r"checkpoint(\d+)\.pt$")
    found = sorted(((int(m.group(1)), p) for p in directory.iterdir()
                    if (m := pattern.search(p.name))), reverse=True)
    if len(found) < n:
        raise SystemExit(f"{directory} has {len(found)} such checkpoints, {n} asked for "
                         f"({'--save-interval-updates' if by_update else 'epoch'} checkpoints)")
    return [p for _, p in found[:n]]


def average(paths: Sequence[Path]) -> dict:
    """The newest (first) checkpoint with the mean of all checkpoints' model weights."""
    sums: dict[str, torch.Tensor] = {}
    newest: Optional[dict] = None
    for path in paths:
        check_checkpoint_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = state["model"]
        if newest is None:
            newest = state
            sums = {k: v.double() if v.is_floating_point() else v for k, v in model.items()}
            continue
        if set(model) != set(sums):
            raise SystemExit(f"{path} holds other parameters than {paths[0]}")
        for key, value in model.items():
            if value.is_floating_point():
                sums[key] += value.double()
    assert newest is not None
    newest["model"] = {k: (v / len(paths)).to(newest["model"][k].dtype)
                       if v.is_floating_point() else v for k, v in sums.items()}
    return newest


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", nargs="+", type=Path, required=True,
                        help="checkpoint files, or one directory with the --num-* options")
    parser.add_argument("--output", type=Path, required=True)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--num-epoch-checkpoints", type=int)
    group.add_argument("--num-update-checkpoints", type=int)
    args = parser.parse_args(argv)
    n = args.num_epoch_checkpoints or args.num_update_checkpoints
    if n is not None:
        if len(args.inputs) != 1 or not args.inputs[0].is_dir():
            raise SystemExit("--num-*-checkpoints takes one checkpoint directory as --inputs")
        paths = last_checkpoints(args.inputs[0], n, args.num_update_checkpoints is not None)
    else:
        paths = args.inputs
    torch.save(average(paths), args.output)
    print(f"averaged {len(paths)} checkpoints ({', '.join(p.name for p in paths)}) -> "
          f"{args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

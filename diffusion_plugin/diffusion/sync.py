"""Collectives that keep training statistics identical on every ``torch.distributed`` worker.

Without an initialised process group (or with one worker) both functions return their input.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Number of workers of the default process group (1 when there is none)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Σ over workers of ``tensor`` (in place), the same on every worker."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_rows(rows: Tensor) -> Tensor:
    """The rows of every worker concatenated in rank order: [Σ_r N_r, ...] from [N_r, ...]."""
    workers = world_size()
    if workers == 1:
        return rows
    count = torch.tensor([rows.size(0)], device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(workers)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
    padded[: rows.size(0)] = rows
    gathered = [torch.empty_like(padded) for _ in range(workers)]
    dist.all_gather(gathered, padded)
    return torch.cat([part[:size] for part, size in zip(gathered, sizes)])

"""Training timestep samplers: t ∈ {1..T} with importance weights 1 / (T p_t)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


class UniformSampler:
    """t ~ U{1, …, T}; every weight is 1."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def sample(self, batch_size: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        t = torch.randint(1, self.steps + 1, (batch_size,), device=device)
        return t, torch.ones(batch_size, device=device)

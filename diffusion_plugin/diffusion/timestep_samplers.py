"""Training timestep samplers: t ∈ {1..T} with importance weights 1 / (T p_t)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .schedules import KeepsBufferDtypes
from .sync import all_gather_rows

TIMESTEP_SAMPLERS = ("uniform", "loss-second-moment")


class UniformSampler:
    """t ~ U{1, …, T}; every weight is 1."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def sample(self, batch_size: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        t = torch.randint(1, self.steps + 1, (batch_size,), device=device)
        return t, torch.ones(batch_size, device=device)


class LossSecondMomentSampler(KeepsBufferDtypes):
    """Improved-DDPM importance sampling (DiffuSeq Eq. 9): p_t ∝ sqrt(E[L_t²]) over the last
    ``history`` losses of each t, mixed with ``uniform_mix`` of the uniform distribution; uniform
    until every t has a full history.  Weights 1 / (T p_t) keep E_t[w_t L_t] = mean_t L_t.

    Buffers (saved): ``losses`` [T, H] oldest first, ``filled`` [T] entries in use.  Losses of a
    training update wait in ``pending`` (not saved) until :meth:`end_update` appends the losses of
    every worker in rank order.
    """

    def __init__(self, steps: int, history: int = 10, uniform_mix: float = 0.001) -> None:
        super().__init__()
        self.steps = steps
        self.history = history
        self.uniform_mix = uniform_mix
        self.register_buffer("losses", torch.zeros(steps, history, dtype=torch.float64))
        self.register_buffer("filled", torch.zeros(steps, dtype=torch.long))
        self.register_buffer("pending", torch.zeros(0, 2, dtype=torch.float64), persistent=False)

    def probabilities(self) -> Tensor:
        """p_t for t = 1..T: [T] float64."""
        uniform = torch.full((self.steps,), 1.0 / self.steps, dtype=torch.float64, device=self.losses.device)
        if bool((self.filled < self.history).any()):
            return uniform
        rms = self.losses.pow(2).mean(dim=1).sqrt()
        return (1 - self.uniform_mix) * rms / rms.sum() + self.uniform_mix * uniform

    def sample(self, batch_size: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        p = self.probabilities()
        index = torch.multinomial(p, batch_size, replacement=True)
        weights = 1.0 / (self.steps * p[index])
        return (index + 1).to(device), weights.float().to(device)

    @torch.no_grad()
    def record(self, timesteps: Tensor, losses: Tensor) -> None:
        """Queue per-sequence losses [B] at their timesteps [B] (in batch order)."""
        rows = torch.stack([timesteps.to(self.pending), losses.to(self.pending)], dim=1)
        self.pending = torch.cat([self.pending, rows.to(self.pending.device)])

    @torch.no_grad()
    def end_update(self) -> None:
        """Append the queued losses of every worker (rank order) to each t's history."""
        rows = all_gather_rows(self.pending)
        self.pending = self.pending[:0]
        steps = rows[:, 0].long() - 1
        for step in steps.unique().tolist():
            old = self.losses[step, : int(self.filled[step])]
            recent = torch.cat([old, rows[steps == step, 1]])[-self.history :]
            self.losses[step, : recent.numel()] = recent
            self.filled[step] = recent.numel()

"""Named noise schedules and Difformer's noise rescaling.

Convention used across the package: discrete timesteps ``t = 0 .. T``; ``t = 0`` is the clean
embedding (``ᾱ_0 = 1``) and ``t = 1 .. T`` are the noised states used in training.  All tables are
computed in float64 and cast by the caller.
"""
from __future__ import annotations

import math
from typing import Callable, Tuple, TypeVar

import numpy as np
import torch
from torch import Tensor

SCHEDULES = ("linear", "cosine", "sqrt")
MAX_BETA = 0.999
SQRT_OFFSET = 1e-4
COSINE_OFFSET = 0.008
MAX_SENSIBLE_FACTOR = 10.0  # rescaling factors above this draw a warning (Difformer's are 1-5)

ArrayLike = TypeVar("ArrayLike")


def betas_from_alpha_bar(alpha_bar: Callable[[float], float], steps: int) -> np.ndarray:
    """β_t = min(1 − f(t/T) / f((t−1)/T), 0.999) for t = 1..T (improved-DDPM discretisation)."""
    betas = [
        min(1.0 - alpha_bar(t / steps) / alpha_bar((t - 1) / steps), MAX_BETA)
        for t in range(1, steps + 1)
    ]
    return np.asarray(betas, dtype=np.float64)


def named_betas(name: str, steps: int) -> np.ndarray:
    """Per-step β_t (t = 1..T) of a named schedule.

    * ``linear`` (DDPM): β linear from 1e-4·1000/T to 0.02·1000/T.
    * ``cosine`` (improved DDPM): f(τ) = cos²(((τ + 0.008) / 1.008) · π/2).
    * ``sqrt`` (DiffusionLM): f(τ) = 1 − sqrt(τ + 1e-4).
    """
    if steps < 1:
        raise ValueError(f"--diffusion-steps must be >= 1, got {steps}")
    if name == "linear":
        scale = 1000.0 / steps
        return np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)
    if name == "cosine":
        return betas_from_alpha_bar(
            lambda tau: math.cos((tau + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2,
            steps,
        )
    if name == "sqrt":
        return betas_from_alpha_bar(lambda tau: 1.0 - math.sqrt(tau + SQRT_OFFSET), steps)
    raise ValueError(
        f"unknown noise schedule {name!r}; choose one of: {', '.join(SCHEDULES)}"
    )


def alphas_cumprod(name: str, steps: int) -> np.ndarray:
    """ᾱ_t = ∏_{s ≤ t} (1 − β_s) for t = 0..T, shape [T + 1], with ᾱ_0 = 1."""
    return np.concatenate([[1.0], np.cumprod(1.0 - named_betas(name, steps))])


def rescale(
    alpha_bar: ArrayLike, factor: float, variance_preserving: bool = False
) -> Tuple[ArrayLike, ArrayLike]:
    """Difformer noise rescaling: returns (ᾱ', β̄') from ᾱ.

    Eq. 3:  ᾱ' = ᾱ,               β̄' = F² (1 − ᾱ).
    Eq. 8:  ᾱ' = ᾱ / (ᾱ + F² β̄),  β̄' = F² β̄ / (ᾱ + F² β̄)   (variance preserving).
    Works elementwise on numpy arrays and torch tensors.
    """
    if not math.isfinite(factor) or factor < 0:
        raise ValueError(f"rescaling factor must be a finite number >= 0, got {factor}")
    noise = (1 - alpha_bar) * factor**2
    if not variance_preserving:
        return alpha_bar, noise
    total = alpha_bar + noise
    return alpha_bar / total, noise / total


class KeepsBufferDtypes(torch.nn.Module):
    """A module whose buffers keep their dtype under ``.half()``/``.to(dtype)`` (only their device
    follows), so fp16 training neither quantises ᾱ near 0 and 1 nor float64 loss statistics."""

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        originals = dict(self._buffers)
        super()._apply(fn, recurse)
        for name, original in originals.items():
            if original is not None:
                self._buffers[name] = original.to(self._buffers[name].device)
        return self


class NoiseSchedule(KeepsBufferDtypes):
    """ᾱ table over t = 0..T with one column per target position, shape [T + 1, P] (float64).

    A named schedule has P = 1 (shared by all positions) and is recomputed from its name, so it is
    not saved; a per-position (token-level) table has P > 1 and positions past the last column
    reuse it.
    """

    def __init__(self, name: str, steps: int) -> None:
        super().__init__()
        self.name = name
        table = torch.from_numpy(alphas_cumprod(name, steps))[:, None]
        self.register_buffer("alpha_bar_table", table, persistent=False)

    @property
    def steps(self) -> int:
        return self.alpha_bar_table.size(0) - 1

    def alpha_bar(self, t: Tensor, length: int) -> Tensor:
        """ᾱ_t for each batch row of ``t`` ([B]) and position: [B, L, 1] (or [B, 1, 1] if P = 1)."""
        rows = self.alpha_bar_table[t]
        if rows.size(1) > 1:
            columns = torch.arange(length, device=t.device).clamp(max=rows.size(1) - 1)
            rows = rows[:, columns]
        return rows.unsqueeze(-1)

    def coefficients(
        self,
        t: Tensor,
        length: int,
        factor: float = 1.0,
        variance_preserving: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> Tuple[Tensor, Tensor]:
        """(ᾱ'_t, β̄'_t) after rescaling (Eq. 3 / Eq. 8), cast to ``dtype``."""
        signal, noise = rescale(self.alpha_bar(t, length), factor, variance_preserving)
        return signal.to(dtype), noise.to(dtype)

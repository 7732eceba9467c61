"""What every sampler shares: the forward draw, respacing, the posterior, the affine
``Transition`` and the sampler registry."""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..schedules import rescale


def q_sample(z0: Tensor, signal: Tensor, noise_var: Tensor, noise: Tensor) -> Tensor:
    """z_t = sqrt(ᾱ'_t) z_0 + sqrt(β̄'_t) ε."""
    return signal.sqrt() * z0 + noise_var.sqrt() * noise


def check_decoding_steps(diffusion_steps: int, decoding_steps: int) -> None:
    """K must be in [1, T]."""
    if not 1 <= decoding_steps <= diffusion_steps:
        raise ValueError(
            f"--decoding-steps must be in [1, --diffusion-steps={diffusion_steps}], "
            f"got {decoding_steps}"
        )


def respaced_timesteps(diffusion_steps: int, decoding_steps: int) -> Tensor:
    """K + 1 evenly spaced timesteps T = τ_K > … > τ_1 > τ_0 = 0 (step skipping).

    With K = T this is every step.  The schedule is read at these τ, so ᾱ is kept exactly at the
    chosen steps and the per-step α_k = ᾱ_{τ_k} / ᾱ_{τ_{k-1}} is recomputed by the posterior.
    """
    check_decoding_steps(diffusion_steps, decoding_steps)
    steps = torch.linspace(diffusion_steps, 0, decoding_steps + 1, dtype=torch.float64)
    return steps.round().long()


SPACINGS = ("uniform", "logsnr", "quadratic")


def strictly_decreasing(steps: Tensor) -> Tensor:
    """K + 1 timesteps from τ_0 = T down to τ_K = 0 made strictly decreasing: each clamped to
    [K − j, τ_{j−1} − 1], below its predecessor and leaving room for the steps after it."""
    out = [int(t) for t in steps]
    last = len(out) - 1
    for j in range(1, len(out)):
        out[j] = min(max(out[j], last - j), out[j - 1] - 1)
    return torch.tensor(out, dtype=torch.long)


def spaced_timesteps(
    alpha_bar: Tensor, decoding_steps: int, spacing: str, factor: float = 1.0, variance_preserving: bool = False
) -> Tensor:
    """K + 1 descending timesteps T = τ_0 > … > τ_K = 0 of a chain (``--decoding-timesteps``):

    * ``uniform``: evenly spaced in t (``respaced_timesteps``);
    * ``quadratic``: τ_j = T ((K − j)/K)², denser at low noise (Lu et al. 2022 for few steps);
    * ``logsnr``: evenly spaced in λ = ½ log(ᾱ'/β̄') of the decoding schedule (``alpha_bar``
      [T + 1] or per position [T + 1, P], rescaled by ``factor``; per position: λ averaged over
      positions) from λ_T to λ_1, the nearest integer t each, then τ_K = 0.
    Integer timesteps, made ``strictly_decreasing`` where rounding repeats one."""
    steps = alpha_bar.size(0) - 1
    if spacing == "uniform":
        return respaced_timesteps(steps, decoding_steps)
    check_decoding_steps(steps, decoding_steps)
    if spacing == "quadratic":
        fraction = torch.linspace(1.0, 0.0, decoding_steps + 1, dtype=torch.float64)
        return strictly_decreasing((steps * fraction**2).round().long())
    if spacing != "logsnr":
        raise ValueError(f"--decoding-timesteps must be one of {SPACINGS}, got {spacing!r}")
    signal, noise = rescale(alpha_bar.double().reshape(steps + 1, -1), factor, variance_preserving)
    lam = (0.5 * (signal[1:] / noise[1:]).log()).mean(dim=1)  # t = 1..T, decreasing in t
    if decoding_steps == 1:
        return torch.tensor([steps, 0])
    targets = torch.linspace(float(lam[-1]), float(lam[0]), decoding_steps, dtype=torch.float64)
    # nearest t (λ decreasing): search the ascending reversed curve
    ascending = lam.flip(0)
    index = torch.searchsorted(ascending, targets).clamp(1, steps - 1)
    nearer_left = (targets - ascending[index - 1]).abs() <= (ascending[index] - targets).abs()
    index = torch.where(nearer_left, index - 1, index)
    timesteps = steps - index  # ascending position i is t = T − i
    return strictly_decreasing(torch.cat([timesteps, torch.zeros(1, dtype=torch.long)]))


def posterior(
    signal_t: Tensor, noise_t: Tensor, signal_s: Tensor, noise_s: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """Coefficients of q(z_s | z_t, z_0) for s < t: mean = c0·z_0 + ct·z_t, variance var.

    With a_t² = ᾱ'_t, σ_t² = β̄'_t, a_{t|s} = a_t / a_s and σ²_{t|s} = σ_t² − a²_{t|s} σ_s²:
    c0 = a_s σ²_{t|s} / σ_t²,  ct = a_{t|s} σ_s² / σ_t²,  var = σ²_{t|s} σ_s² / σ_t².
    For ᾱ + β̄ = 1 this is DDPM's  c0 = sqrt(ᾱ_s) β_t / β̄_t,  ct = sqrt(α_t) β̄_s / β̄_t,
    var = β̄_s β_t / β̄_t  with α_t = ᾱ_t / ᾱ_s.
    """
    ratio = signal_t / signal_s
    transition_var = (noise_t - ratio * noise_s).clamp(min=0.0)
    c0 = signal_s.sqrt() * transition_var / noise_t
    ct = ratio.sqrt() * noise_s / noise_t
    return c0, ct, transition_var * noise_s / noise_t


class Transition(NamedTuple):
    """One reverse step as an affine map of (ẑ_0, z_t) plus noise: z_s = c0·ẑ_0 + ct·z_t + std·ε,
    plus Σ_j c_past[j]·ẑ_0^(k−1−j) over the previous steps' predictions for multistep solvers.

    Every sampler below has this form, so a chain computes the coefficients of all its steps
    at once and each step costs three multiply-adds (one more per past prediction)."""

    c0: Tensor
    ct: Tensor
    std: Tensor
    c_past: Tuple[Tensor, ...] = ()

    def at(self, k: int) -> "Transition":
        """Step ``k`` of transitions stacked over the steps of a chain (dimension 0)."""
        return Transition(self.c0[k], self.ct[k], self.std[k], tuple(c[k] for c in self.c_past))

    def apply(
        self, z_t: Tensor, z0_hat: Tensor, noise: Optional[Tensor], past: Sequence[Tensor] = ()
    ) -> Tensor:
        """z_s in the precision of z_t (ẑ_0 may come from a half-precision network); ``past``:
        the previous predictions, latest first (as many as ``c_past`` has, once available)."""
        out = torch.addcmul(self.ct * z_t, self.c0, z0_hat.to(z_t.dtype))
        for c, prediction in zip(self.c_past, past):
            out.addcmul_(c, prediction.to(z_t.dtype))
        return out if noise is None else out.addcmul_(self.std, noise)


class Sampler(NamedTuple):
    """A ``--decoding-sampler``: ``transitions(signal, noise_var, options)`` gives the stacked
    transitions of a chain from its (ᾱ'_τ, β̄'_τ) [K + 1, ...] (τ descending); ``check(options)``
    refuses decoding flags it cannot honour, naming them (``options``: the decoding flags)."""

    transitions: Callable[[Tensor, Tensor, Mapping[str, Any]], Transition]
    check: Callable[[Mapping[str, Any]], None]


SAMPLERS: Dict[str, Sampler] = {}


def register_sampler(name: str, check: Optional[Callable[[Mapping[str, Any]], None]] = None):
    """Decorator: register ``transitions`` as the sampler ``name``."""

    def register(transitions: Callable[[Tensor, Tensor, Mapping[str, Any]], Transition]):
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} registered twice")
        SAMPLERS[name] = Sampler(transitions, check or (lambda options: None))
        return transitions

    return register


def chain_steps(signal: Tensor, noise_var: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(ᾱ'_t, β̄'_t, ᾱ'_s, β̄'_s) of every step t = τ_k -> s = τ_{k+1} of a stacked chain."""
    return signal[:-1], noise_var[:-1], signal[1:], noise_var[1:]

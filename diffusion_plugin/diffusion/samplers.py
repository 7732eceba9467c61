"""Forward noising and reverse-process steps for Gaussian embedding diffusion.

Every function takes the schedule values already gathered for the elements it acts on
(``signal`` = ᾱ'_t and ``noise`` = β̄'_t, broadcastable to the latent), so the same code serves
named schedules, rescaled schedules and per-position (adaptive) tables.  The marginal is
``z_t = sqrt(ᾱ'_t) z_0 + sqrt(β̄'_t) ε``; without variance preservation ᾱ' + β̄' need not be 1.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor


def q_sample(z0: Tensor, signal: Tensor, noise_var: Tensor, noise: Tensor) -> Tensor:
    """z_t = sqrt(ᾱ'_t) z_0 + sqrt(β̄'_t) ε."""
    return signal.sqrt() * z0 + noise_var.sqrt() * noise


def respaced_timesteps(diffusion_steps: int, decoding_steps: int) -> Tensor:
    """K + 1 evenly spaced timesteps T = τ_K > … > τ_1 > τ_0 = 0 (step skipping).

    With K = T this is every step.  The schedule is read at these τ, so ᾱ is kept exactly at the
    chosen steps and the per-step α_k = ᾱ_{τ_k} / ᾱ_{τ_{k-1}} is recomputed by the posterior.
    """
    if not 1 <= decoding_steps <= diffusion_steps:
        raise ValueError(
            f"--decoding-steps must be in [1, --diffusion-steps={diffusion_steps}], "
            f"got {decoding_steps}"
        )
    steps = torch.linspace(diffusion_steps, 0, decoding_steps + 1, dtype=torch.float64)
    return steps.round().long()


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
    """One reverse step as an affine map of (ẑ_0, z_t) plus noise: z_s = c0·ẑ_0 + ct·z_t + std·ε.

    Every sampler below has this form, so a chain computes the coefficients of all its steps
    at once and each step costs three multiply-adds."""

    c0: Tensor
    ct: Tensor
    std: Tensor

    def at(self, k: int) -> "Transition":
        """Step ``k`` of transitions stacked over the steps of a chain (dimension 0)."""
        return Transition(self.c0[k], self.ct[k], self.std[k])

    def apply(self, z_t: Tensor, z0_hat: Tensor, noise: Optional[Tensor]) -> Tensor:
        """z_s in the precision of z_t (ẑ_0 may come from a half-precision network)."""
        out = torch.addcmul(self.ct * z_t, self.c0, z0_hat.to(z_t.dtype))
        return out if noise is None else out.addcmul_(self.std, noise)


def ddpm_transition(signal_t: Tensor, noise_t: Tensor, signal_s: Tensor, noise_s: Tensor) -> Transition:
    """Ancestral step z_s ~ N(c0·ẑ_0 + ct·z_t, var) of the (respaced) posterior."""
    c0, ct, var = posterior(signal_t, noise_t, signal_s, noise_s)
    return Transition(c0, ct, var.sqrt())


def ddim_transition(
    signal_t: Tensor, noise_t: Tensor, signal_s: Tensor, noise_s: Tensor, eta: float
) -> Transition:
    """DDIM: ε̂ = (z_t − a_t ẑ_0) / σ_t;  z_s = a_s ẑ_0 + sqrt(σ_s² − c²) ε̂ + c ε, that is
    ct = sqrt(σ_s² − c²) / σ_t and c0 = a_s − ct·a_t.

    c = η · sqrt(posterior variance) (= η sqrt(β̄_s/β̄_t) sqrt(1 − ᾱ_t/ᾱ_s) when ᾱ + β̄ = 1);
    η = 0 is deterministic and η = 1 is the DDPM posterior.
    """
    _, _, var = posterior(signal_t, noise_t, signal_s, noise_s)
    sigma_sq = eta**2 * var
    ct = (noise_s - sigma_sq).clamp(min=0.0).sqrt() / noise_t.sqrt()
    return Transition(signal_s.sqrt() - ct * signal_t.sqrt(), ct, sigma_sq.sqrt())


def prior_transition(signal_s: Tensor, noise_s: Tensor) -> Transition:
    """SeqDiffuSeq App. E prior sampling: z_s ~ N(sqrt(ᾱ_s) ẑ_0, β̄_s I), whatever z_t."""
    return Transition(signal_s.sqrt(), torch.zeros_like(signal_s), noise_s.sqrt())

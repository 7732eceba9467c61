"""Forward noising and reverse-process steps for Gaussian embedding diffusion.

Every function takes the schedule values already gathered for the elements it acts on
(``signal`` = ᾱ'_t and ``noise`` = β̄'_t, broadcastable to the latent), so the same code serves
named schedules, rescaled schedules and per-position (adaptive) tables.  The marginal is
``z_t = sqrt(ᾱ'_t) z_0 + sqrt(β̄'_t) ε``; without variance preservation ᾱ' + β̄' need not be 1.
"""
from __future__ import annotations

from typing import Optional, Tuple

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


def ddpm_step(
    z_t: Tensor,
    z0_hat: Tensor,
    signal_t: Tensor,
    noise_t: Tensor,
    signal_s: Tensor,
    noise_s: Tensor,
    noise: Optional[Tensor],
) -> Tensor:
    """Ancestral step z_s ~ N(c0·ẑ_0 + ct·z_t, var) of the (respaced) posterior."""
    c0, ct, var = posterior(signal_t, noise_t, signal_s, noise_s)
    mean = c0 * z0_hat + ct * z_t
    return mean if noise is None else mean + var.sqrt() * noise


def ddim_step(
    z_t: Tensor,
    z0_hat: Tensor,
    signal_t: Tensor,
    noise_t: Tensor,
    signal_s: Tensor,
    noise_s: Tensor,
    eta: float,
    noise: Optional[Tensor],
) -> Tensor:
    """DDIM: ε̂ = (z_t − a_t ẑ_0) / σ_t;  z_s = a_s ẑ_0 + sqrt(σ_s² − c²) ε̂ + c ε.

    c = η · sqrt(posterior variance) (= η sqrt(β̄_s/β̄_t) sqrt(1 − ᾱ_t/ᾱ_s) when ᾱ + β̄ = 1);
    η = 0 is deterministic and η = 1 is the DDPM posterior.
    """
    eps_hat = (z_t - signal_t.sqrt() * z0_hat) / noise_t.sqrt()
    _, _, var = posterior(signal_t, noise_t, signal_s, noise_s)
    sigma_sq = eta**2 * var
    out = signal_s.sqrt() * z0_hat + (noise_s - sigma_sq).clamp(min=0.0).sqrt() * eps_hat
    if noise is not None and eta > 0:
        out = out + sigma_sq.sqrt() * noise
    return out


def prior_step(z0_hat: Tensor, signal_s: Tensor, noise_s: Tensor, noise: Tensor) -> Tensor:
    """SeqDiffuSeq App. E prior sampling: z_s ~ N(sqrt(ᾱ_s) ẑ_0, β̄_s I)."""
    return q_sample(z0_hat, signal_s, noise_s, noise)

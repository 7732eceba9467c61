"""Forward noising and reverse-process steps for Gaussian embedding diffusion.

Every function takes the schedule values already gathered for the elements it acts on
(``signal`` = ᾱ'_t and ``noise`` = β̄'_t, broadcastable to the latent), so the same code serves
named schedules, rescaled schedules and per-position (adaptive) tables.  The marginal is
``z_t = sqrt(ᾱ'_t) z_0 + sqrt(β̄'_t) ε``; without variance preservation ᾱ' + β̄' need not be 1.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .schedules import rescale


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
    respaced_timesteps(steps, decoding_steps)  # the range check
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


def dpm_solver_transitions(signal: Tensor, noise_var: Tensor, order: int) -> Transition:
    """DPM-Solver++ (Lu et al. 2022), multistep, data prediction: every step τ_k → τ_{k+1} of a
    chain whose (ᾱ'_τ, β̄'_τ) are stacked over dimension 0 ([K + 1, ...], τ descending).

    With α = sqrt(ᾱ'), σ = sqrt(β̄'), λ = log(α/σ), h = λ_s − λ_t, r_j = h_{k−1−j}/h and x̂_j the
    predictions of the current and previous steps (j = 0, 1, 2), the exact solution is
    z_s = (σ_s/σ_t) z_t + σ_s ∫_{λ_t}^{λ_s} e^λ x̂(λ) dλ; with φ1 = e^{−h} − 1, φ2 = φ1/h + 1,
    φ3 = φ2/h − 1/2:
      order 1:  z_s = (σ_s/σ_t) z_t − α_s φ1 x̂_0                          (= DDIM, η = 0)
      order 2:  ... − α_s φ1 (x̂_0 + D1_0/2),  D1_0 = (x̂_0 − x̂_1)/r0        (the paper's 2M)
      order 3:  ... − α_s φ1 x̂_0 + α_s φ2 D1 − 2 α_s φ3 D2, the quadratic through x̂_0..2
                integrated exactly: D1 = D1_0 + r0/(r0 + r1)·(D1_0 − D1_1) ≈ h x̂',
                D2 = (D1_0 − D1_1)/(r0 + r1) ≈ h² x̂''/2, D1_1 = (x̂_1 − x̂_2)/r1.
    Step k uses order min(order, k + 1) (no past prediction before), and a final step to
    σ_s = 0 order 1 (z_s = x̂_0). Computed in float64 and cast back: e^{−h} − 1 and h² lose
    digits in float32 when steps are small."""
    if order not in (1, 2, 3):
        raise ValueError(f"--dpm-solver-order must be 1, 2 or 3, got {order}")
    dtype = signal.dtype
    alpha, sigma = signal.double().sqrt(), noise_var.double().sqrt()
    lam = alpha.log() - sigma.log()
    h = lam[1:] - lam[:-1]  # [K, ...]
    phi1 = torch.expm1(-h)
    phi2 = phi1 / h + 1.0
    phi3 = phi2 / h - 0.5
    a_s = alpha[1:]
    ones = torch.ones_like(h[:1])
    r0 = torch.cat([ones, h[:-1]]) / h  # h_{k−1}/h_k (1 where there is no previous step)
    r1 = torch.cat([ones, ones, h[:-2]])[: h.size(0)] / h
    # order 2: −α_s φ1 (x̂_0 + (x̂_0 − x̂_1)/(2 r0))
    second = (-a_s * phi1 * (1 + 0.5 / r0), a_s * phi1 * 0.5 / r0, torch.zeros_like(h))
    # order 3, each D as its coefficients of (x̂_0, x̂_1, x̂_2)
    diff = (1 / r0, -(1 / r0 + 1 / r1), 1 / r1)  # D1_0 − D1_1
    d1 = (1 / r0 + r0 / (r0 + r1) * diff[0], -1 / r0 + r0 / (r0 + r1) * diff[1], r0 / (r0 + r1) * diff[2])
    d2 = tuple(x / (r0 + r1) for x in diff)
    third = tuple(
        (-a_s * phi1 if j == 0 else 0.0) + a_s * phi2 * d1[j] - 2 * a_s * phi3 * d2[j] for j in range(3)
    )
    first = (-a_s * phi1, torch.zeros_like(h), torch.zeros_like(h))
    # step k uses order min(order, k + 1); a step to σ_s = 0 (h = ∞) order 1: it lands on x̂_0
    used = torch.arange(h.size(0)).clamp(max=order - 1).view(-1, *[1] * (h.dim() - 1)) + 1
    used = torch.where(torch.isfinite(h), used, 1)
    c = [
        torch.where(used == 1, first[j], torch.where(used == 2, second[j], third[j]))
        for j in range(3)
    ]
    ct = sigma[1:] / sigma[:-1]
    return Transition(c[0].to(dtype), ct.to(dtype), torch.zeros_like(ct, dtype=dtype), tuple(x.to(dtype) for x in c[1:order]))

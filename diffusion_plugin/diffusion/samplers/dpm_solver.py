"""DPM-Solver++ (Lu et al. 2022): multistep, data prediction, deterministic."""
from typing import Any, Mapping

import torch
from torch import Tensor

from .base import Transition, register_sampler


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


def check_dpm_solver(options: Mapping[str, Any]) -> None:
    if options["ddim_eta"] > 0:
        raise ValueError("--ddim-eta applies to --decoding-sampler ddim; dpm-solver++ is deterministic")
    if options["prior_sampling_prob"] > 0:
        raise ValueError(
            "--prior-sampling-prob (SeqDiffuSeq's prior steps) applies to --decoding-sampler "
            "ddpm or ddim, not dpm-solver++"
        )


@register_sampler("dpm-solver++", check_dpm_solver)
def dpm_solver_chain(signal: Tensor, noise_var: Tensor, options: Mapping[str, Any]) -> Transition:
    return dpm_solver_transitions(signal, noise_var, options["dpm_solver_order"])

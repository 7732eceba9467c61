"""The reverse process of one batch as an object (the shape of diffusers' schedulers, in our
own code): built once from the schedule, the K + 1 timesteps and the decoding flags, it holds
every step's coefficients (``samplers``), the draws' source and the past predictions a multistep
solver reads; the caller feeds the denoiser ``timesteps[k]`` and calls ``step``.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Protocol

import torch
from torch import Tensor

from .samplers import SAMPLERS, Transition, prior_transition


class NoiseSource(Protocol):
    """The draws of a chain (``noise.SentenceNoise``: per-sentence seeded generators)."""

    def normal(self, device: torch.device, dtype: torch.dtype) -> Tensor: ...

    def uniform(self, device: torch.device) -> Tensor: ...


class ReverseChain:
    """z_T, then z_{τ_{k+1}} = step(z_{τ_k}, ẑ_0, k) for k = 0 .. K − 1 on the schedule's
    (ᾱ'_τ, β̄'_τ) [K + 1, 1 or L, 1] (rescaled, per position for an adaptive table).

    ``options``: the decoding flags the samplers read (``decoding_sampler``, ``ddim_eta``,
    ``dpm_solver_order``, ``prior_sampling_prob`` p1 and ``prior_sampling_until`` p2: with
    probability p1, during the first p2 of the K steps, a candidate takes SeqDiffuSeq's prior step
    instead). Every draw comes from ``noise``: a seed fixes the chain without touching torch's
    global RNG."""

    def __init__(
        self, signal: Tensor, noise_var: Tensor, timesteps: Tensor, options: Mapping[str, Any], noise: NoiseSource
    ) -> None:
        self.timesteps = timesteps
        self.noise = noise
        self.start_std = noise_var[0].sqrt()  # sqrt(β̄'_T) [1 or L, 1]
        self.transitions: Transition = SAMPLERS[options["decoding_sampler"]].transitions(signal, noise_var, options)
        self.prior_prob = options["prior_sampling_prob"]
        self.prior: Optional[Transition] = (
            prior_transition(signal[1:], noise_var[1:]) if self.prior_prob > 0 else None
        )
        self.prior_steps = options["prior_sampling_until"] * (len(timesteps) - 1)
        # a sampler that adds noise at any step draws at every step (DDPM, DDIM with η > 0)
        self.stochastic_sampler = bool((self.transitions.std != 0).any())
        self.past: List[Tensor] = []  # earlier ẑ_0, latest first, as many as the sampler reads

    @classmethod
    def from_schedule(
        cls,
        schedule: Any,
        timesteps: Tensor,
        length: int,
        factor: float,
        variance_preserving: bool,
        options: Mapping[str, Any],
        noise: NoiseSource,
        dtype: torch.dtype,
    ) -> "ReverseChain":
        """The chain of a ``NoiseSchedule`` (or adaptive table) at ``timesteps`` for targets of
        ``length`` positions, rescaled by the decoding ``factor``, in ``dtype``."""
        signal, noise_var = schedule.coefficients(timesteps, length, factor, variance_preserving, dtype)
        return cls(signal, noise_var, timesteps, options, noise)

    def initial(self, padding_mask: Tensor, dtype: torch.dtype) -> Tensor:
        """z_T ~ N(0, β̄'_T I), the chain's marginal at T (ᾱ_T ≈ 0; β̄'_T = F² β̄_T with a decoding
        rescaling factor F), zero at padding."""
        draw = self.noise.normal(padding_mask.device, dtype) * self.start_std.to(dtype)
        return draw.masked_fill(padding_mask.unsqueeze(-1), 0.0)

    def step(self, z_t: Tensor, z0_hat: Tensor, k: int, padding_mask: Tensor) -> Tensor:
        """z at τ_{k+1} from z at τ_k and the denoiser's ẑ_0 there, zero at padding."""
        prior_now = self.prior is not None and k < self.prior_steps
        stochastic = self.stochastic_sampler or prior_now
        noise = self.noise.normal(z_t.device, z_t.dtype) if stochastic else None
        out = self.transitions.at(k).apply(z_t, z0_hat, noise, self.past)
        if prior_now:
            use_prior = self.noise.uniform(z_t.device).view(-1, 1, 1) < self.prior_prob
            out = torch.where(use_prior, self.prior.at(k).apply(z_t, z0_hat, noise), out)
        self.past = [z0_hat, *self.past][: len(self.transitions.c_past)]
        return out.masked_fill(padding_mask.unsqueeze(-1), 0.0)

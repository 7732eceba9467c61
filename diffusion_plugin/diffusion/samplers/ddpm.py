"""DDPM: ancestral sampling from the (respaced) posterior q(z_s | z_t, ẑ_0)."""
from typing import Any, Mapping

from torch import Tensor

from .base import Transition, chain_steps, posterior, register_sampler


def ddpm_transition(signal_t: Tensor, noise_t: Tensor, signal_s: Tensor, noise_s: Tensor) -> Transition:
    """Ancestral step z_s ~ N(c0·ẑ_0 + ct·z_t, var) of the (respaced) posterior."""
    c0, ct, var = posterior(signal_t, noise_t, signal_s, noise_s)
    return Transition(c0, ct, var.sqrt())


@register_sampler("ddpm")
def ddpm_chain(signal: Tensor, noise_var: Tensor, options: Mapping[str, Any]) -> Transition:
    return ddpm_transition(*chain_steps(signal, noise_var))

"""DDIM (Song et al. 2021) with η: deterministic at η = 0, the DDPM posterior at η = 1."""
from typing import Any, Mapping

from torch import Tensor

from .base import Transition, chain_steps, posterior, register_sampler


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


@register_sampler("ddim")
def ddim_chain(signal: Tensor, noise_var: Tensor, options: Mapping[str, Any]) -> Transition:
    return ddim_transition(*chain_steps(signal, noise_var), options["ddim_eta"])

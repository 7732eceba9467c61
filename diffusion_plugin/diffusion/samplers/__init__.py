"""Forward noising and reverse-process steps for Gaussian embedding diffusion.

Every function takes the schedule values already gathered for the elements it acts on
(``signal`` = ᾱ'_t and ``noise`` = β̄'_t, broadcastable to the latent), so the same code serves
named schedules, rescaled schedules and per-position (adaptive) tables.  The marginal is
``z_t = sqrt(ᾱ'_t) z_0 + sqrt(β̄'_t) ε``; without variance preservation ᾱ' + β̄' need not be 1.

Each sampler is one module of this package that registers a :class:`Sampler` (its name for
``--decoding-sampler``, its flag checks and the transitions of a chain) with
``register_sampler``: adding one is adding a file. ``ReverseChain`` (``reverse_chain.py``)
runs any of them.
"""
import importlib
import pkgutil

from .base import (
    SAMPLERS,
    SPACINGS,
    Sampler,
    Transition,
    check_decoding_steps,
    posterior,
    q_sample,
    register_sampler,
    respaced_timesteps,
    spaced_timesteps,
    strictly_decreasing,
)

# every module of the package registers its sampler when imported
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from .ddim import ddim_transition  # noqa: E402
from .ddpm import ddpm_transition  # noqa: E402
from .dpm_solver import dpm_solver_transitions  # noqa: E402
from .prior import prior_transition  # noqa: E402

__all__ = [
    "SAMPLERS", "SPACINGS", "Sampler", "Transition", "check_decoding_steps", "ddim_transition", "ddpm_transition",
    "dpm_solver_transitions", "posterior", "prior_transition", "q_sample", "register_sampler",
    "respaced_timesteps", "spaced_timesteps", "strictly_decreasing",
]

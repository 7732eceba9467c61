"""SeqDiffuSeq App. E prior sampling: a step that draws from the prior marginal, whatever z_t
(mixed into another sampler's chain with probability p1 during its first p2 steps)."""
import torch
from torch import Tensor

from .base import Transition


def prior_transition(signal_s: Tensor, noise_s: Tensor) -> Transition:
    """SeqDiffuSeq App. E prior sampling: z_s ~ N(sqrt(ᾱ_s) ẑ_0, β̄_s I), whatever z_t."""
    return Transition(signal_s.sqrt(), torch.zeros_like(signal_s), noise_s.sqrt())

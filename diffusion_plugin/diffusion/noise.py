"""Reproducible noise for the reverse process: each sentence draws from its own generator.

A chain's draws (z_T, the stochastic steps' ε, prior sampling's coin flips) come from a
``torch.Generator`` seeded by (seed, sentence id), so a sentence decodes to the same output
whatever shares its batch: batch size, order, padding and slicing leave its draws unchanged.
The draws of a sentence are made on the CPU (the same numbers on every device) at the width of
its own longest candidate, then placed in the batch's [N, L, d] tensor.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

MASK64 = (1 << 64) - 1


def sentence_seed(seed: int, sentence: int) -> int:
    """A 63-bit seed for ``sentence`` under ``seed`` (SplitMix64 finaliser of the pair), so that
    nearby seeds and ids give unrelated streams."""
    z = (seed * 0x9E3779B97F4A7C15 + sentence * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return (z ^ (z >> 31)) >> 1


class SentenceNoise:
    """The draws of a batch of ``len(ids) · per_source`` candidates (sentence-major, as the
    generator lays them out) with ``lengths`` [N] positions each, in latent width ``dim``."""

    def __init__(self, seed: int, ids: Sequence[int], per_source: int, lengths: Tensor, dim: int) -> None:
        if lengths.numel() != len(ids) * per_source:
            raise ValueError(f"{lengths.numel()} candidate lengths for {len(ids)} sentences x {per_source}")
        self.per_source, self.dim = per_source, dim
        self.generators = [torch.Generator().manual_seed(sentence_seed(seed, int(i))) for i in ids]
        self.widths: List[int] = lengths.view(len(ids), per_source).amax(dim=1).tolist()
        self.length = int(lengths.max()) if lengths.numel() else 0

    def normal(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """ε ~ N(0, I) of shape [N, L, d]; zero beyond each sentence's longest candidate."""
        out = torch.zeros(len(self.generators) * self.per_source, self.length, self.dim, dtype=dtype)
        for s, (generator, width) in enumerate(zip(self.generators, self.widths)):
            rows = slice(s * self.per_source, (s + 1) * self.per_source)
            out[rows, :width] = torch.randn(self.per_source, width, self.dim, generator=generator)
        return out.to(device)

    def uniform(self, device: torch.device) -> Tensor:
        """u ~ U[0, 1) per candidate, [N]."""
        draws = [torch.rand(self.per_source, generator=generator) for generator in self.generators]
        return torch.cat(draws).to(device)

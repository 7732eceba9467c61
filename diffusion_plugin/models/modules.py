"""Building blocks of the denoisers (plain torch, no fairseq import)."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_embedding(values: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """[sin(v·ω_k), cos(v·ω_k)] with ω_k = max_period^(−k/(dim/2)), k < dim/2 (odd dim: zero pad)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=values.device, dtype=torch.float32) / half
    )
    args = values.float().unsqueeze(-1) * freqs
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class TimestepEmbedding(nn.Module):
    """e(t) = W2 · SiLU(W1 · sinusoid(t)), added to every decoder position."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t, self.dim).to(self.mlp[0].weight.dtype))


class LatentEmbedding(nn.Module):
    """Token embeddings E ∈ R^{V×d} in the latent width d, initialised N(0, 1) (σ_e = 1).

    With ``normalize`` (Difformer's embed norm) each vector passes a parameter-free layer norm,
    keeping σ_e ≈ 1 as the degeneration score assumes.  ``logits(ẑ)`` = ẑ · Eᵀ is the tied
    rounding layer p(y | ẑ) = softmax(ẑ · Eᵀ).  The padding vector is zero and untrained, unless
    ``learned_padding`` (DiffuSeq: padding is a generated symbol that ends the target).
    """

    def __init__(
        self, num_embeddings: int, dim: int, padding_idx: int, normalize: bool, learned_padding: bool = False
    ) -> None:
        super().__init__()
        self.padding_idx = None if learned_padding else padding_idx
        self.normalize = normalize
        self.weight = nn.Parameter(torch.randn(num_embeddings, dim))
        if not learned_padding:
            with torch.no_grad():
                self.weight[padding_idx].zero_()

    def table(self) -> Tensor:
        if not self.normalize:
            return self.weight
        return F.layer_norm(self.weight, self.weight.shape[-1:])

    def forward(self, tokens: Tensor) -> Tensor:
        return F.embedding(tokens, self.table(), self.padding_idx)

    def logits(self, z: Tensor) -> Tensor:
        return z @ self.table().t().to(z.dtype)


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal vectors of integer positions, cached and extended on demand."""

    def __init__(self, dim: int, initial: int = 256) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("table", sinusoidal_embedding(torch.arange(initial), dim), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        needed = positions.size(-1)  # positions of a [.., L] tensor are < L: no device sync
        if needed > self.table.size(0):
            self.table = sinusoidal_embedding(
                torch.arange(2 * needed, device=self.table.device), self.dim
            ).to(self.table.dtype)
        return self.table[positions]


def padded_positions(padding_mask: Tensor) -> Tensor:
    """Position of each token counted from the first non-pad token (left or right padding)."""
    return ((~padding_mask).long().cumsum(dim=1) - 1).clamp(min=0)


def masked_mean(x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
    """Mean over the time axis (dim 1) of [B, L, C], ignoring padded positions."""
    if padding_mask is None:
        return x.mean(dim=1)
    keep = (~padding_mask).unsqueeze(-1).type_as(x)
    return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)

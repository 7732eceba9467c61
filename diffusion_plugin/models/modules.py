"""Building blocks of the denoisers (plain torch, no fairseq import)."""
from __future__ import annotations

import math
from typing import Any, Callable, Hashable, List, Optional, Tuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .packed_linear import Linear

T = TypeVar("T")


def sinusoidal_embedding(values: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """[sin(v·ω_k), cos(v·ω_k)] with ω_k = max_period^(−k/(dim/2)), k < dim/2 (odd dim: zero pad)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=values.device, dtype=torch.float32) / half
    )
    args = values.float().unsqueeze(-1) * freqs
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class InferenceCached(nn.Module):
    """A module that keeps one value (tensors, packed weights) computed from its parameters
    while decoding: in eval mode without gradients, as long as its parameters keep their storage
    and version. Training recomputes it at every call; ``train()`` drops it (optimisers update
    ``p.data`` in place without bumping ``p._version``), and so do ``to()`` / ``half()`` /
    ``cuda()``. The parameters are listed once (walking a whole model at every check costs
    about a millisecond); ``train()`` and ``to()`` list them again."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: Tuple[Optional[Tuple[Hashable, ...]], Any] = (None, None)
        self._watched: Optional[List[nn.Parameter]] = None

    def _forget(self) -> None:
        self._cache, self._watched = (None, None), None

    def train(self, mode: bool = True) -> "InferenceCached":
        self._forget()
        return super().train(mode)

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> "InferenceCached":
        self._forget()
        return super()._apply(fn, *args, **kwargs)

    @property
    def decoding(self) -> bool:
        return not (self.training or torch.is_grad_enabled())

    def cached(self, compute: Callable[[], T]) -> T:
        if not self.decoding:
            return compute()
        if self._watched is None:
            self._watched = list(self.parameters())
        key = tuple((p.data_ptr(), p._version) for p in self._watched)
        if self._cache[0] != key:
            self._cache = (key, compute())
        return self._cache[1]


class TimestepEmbedding(InferenceCached):
    """e(t) = W2 · SiLU(W1 · sinusoid(t)), added to every decoder position.

    Decoding reads e(t) of integer t from a table of e(0..T) computed in one batched pass (at
    batch 1 a reverse step would otherwise stream the MLP's weights for a single row)."""

    def __init__(self, dim: int, num_timesteps: int) -> None:
        super().__init__()
        self.dim, self.num_timesteps = dim, num_timesteps
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))

    def embed(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t, self.dim).to(self.mlp[0].weight.dtype))

    def forward(self, t: Tensor) -> Tensor:
        if not self.decoding or t.is_floating_point():
            return self.embed(t)
        table = self.cached(lambda: self.embed(torch.arange(self.num_timesteps + 1, device=t.device)))
        return table[t]


class LatentEmbedding(InferenceCached):
    """Token embeddings E ∈ R^{V×d} in the latent width d, initialised N(0, 1) (σ_e = 1).

    With ``normalize`` (Difformer's embed norm) each vector passes a parameter-free layer norm,
    keeping σ_e ≈ 1 as the degeneration score assumes; with ``affine`` as well, γ ⊙ LN(e) + β
    with a learnt scale and shift per dimension (γ = 1, β = 0 at initialisation; σ_e may then
    drift from 1, and the zero padding vector becomes β).  ``logits(ẑ)`` = ẑ · Eᵀ is the tied
    rounding layer p(y | ẑ) = softmax(ẑ · Eᵀ).  The padding vector is zero and untrained, unless
    ``learned_padding`` (DiffuSeq: padding is a generated symbol that ends the target).
    """

    def __init__(
        self, num_embeddings: int, dim: int, padding_idx: int, normalize: bool, learned_padding: bool = False,
        affine: bool = False,
    ) -> None:
        super().__init__()
        self.padding_idx = None if learned_padding else padding_idx
        self.normalize = normalize
        self.weight = nn.Parameter(torch.randn(num_embeddings, dim))
        self.norm_scale = nn.Parameter(torch.ones(dim)) if normalize and affine else None
        self.norm_shift = nn.Parameter(torch.zeros(dim)) if normalize and affine else None
        if not learned_padding:
            with torch.no_grad():
                self.weight[padding_idx].zero_()

    def normalized(self, vectors: Tensor) -> Tensor:
        if not self.normalize:
            return vectors
        return F.layer_norm(vectors, vectors.shape[-1:], self.norm_scale, self.norm_shift)

    def table(self) -> Tensor:
        """E, row-normalised with ``normalize`` (cached for decoding)."""
        return self.rounding_layer()[0]

    def rounding_layer(self) -> Tuple[Tensor, Linear]:
        """(E, z ↦ z·Eᵀ), E row-normalised with ``normalize``; while decoding computed once and
        packed for oneDNN on a CPU (``packed_linear``)."""
        return self.cached(self._rounding_layer)

    def _rounding_layer(self) -> Tuple[Tensor, Linear]:
        table = self.normalized(self.weight)
        return table, Linear(table, pack=self.decoding)

    def forward(self, tokens: Tensor) -> Tensor:
        """The rows of E for ``tokens`` (normalised row by row: only the looked-up rows)."""
        return self.normalized(F.embedding(tokens, self.weight, self.padding_idx))

    def logits(self, z: Tensor) -> Tensor:
        table, rounding = self.rounding_layer()
        return rounding(z) if z.dtype == table.dtype else z @ table.t().to(z.dtype)


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


class LearnedPositions(nn.Module):
    """Learned vectors of integer positions < ``max_positions`` (a position past the table is
    refused by name)."""

    def __init__(self, max_positions: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_positions, dim).normal_(std=0.02))

    def forward(self, positions: Tensor) -> Tensor:
        if positions.size(-1) > self.weight.size(0):
            raise ValueError(
                f"{positions.size(-1)} positions exceed the {self.weight.size(0)} learned position "
                "embeddings (--max-source-positions / --max-target-positions)"
            )
        return F.embedding(positions, self.weight)


def rms_normalized(x: Tensor, eps: float = 1e-6) -> Tensor:
    """x / sqrt(mean(x²) + eps) over the last axis."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def padded_positions(padding_mask: Tensor) -> Tensor:
    """Position of each token counted from the first non-pad token (left or right padding)."""
    return ((~padding_mask).long().cumsum(dim=1) - 1).clamp(min=0)


def masked_mean(x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
    """Mean over the time axis (dim 1) of [B, L, C], ignoring padded positions."""
    if padding_mask is None:
        return x.mean(dim=1)
    keep = (~padding_mask).unsqueeze(-1).type_as(x)
    return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)

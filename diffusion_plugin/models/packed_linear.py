"""Linear maps with their weights packed once for oneDNN, for decoding on a CPU (plain torch).

A reverse process applies the same decoder weights K times per batch. On a CPU, ``F.linear``
hands every product to the BLAS with the row-major weight; oneDNN's inner product can read a
weight reordered once into its blocked layout instead (what ``torch.compile`` does with frozen
weights). y = x·Wᵀ + b either way; only the summation order, hence float rounding, differs.
A feed-forward block's activation is fused into its first map (a oneDNN post-op) when packed.
Speed against ``F.linear``: bench/results/2026-12-01-cpu-speed-packed.md.
"""
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

PACKED_DTYPES = (torch.float32, torch.bfloat16)
ACTIVATIONS: Dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}  # gelu: erf form


def activation_name(activation: Callable[[Tensor], Tensor]) -> str:
    """The ACTIVATIONS name of a transformer layer's ``activation`` function."""
    for name, fn in ACTIVATIONS.items():
        if activation is fn:
            return name
    raise ValueError(f"no fused form of the activation {activation!r}: one of {sorted(ACTIVATIONS)}")


def can_pack(weight: Tensor) -> bool:
    """oneDNN packing applies to CPU weights in float32, and in bfloat16 where the CPU has
    oneDNN's bf16 kernels (AVX-512 BW/VL/DQ or AVX-NE-CONVERT; an AVX2 core has none), when
    torch has oneDNN."""
    return (
        weight.device.type == "cpu"
        and weight.dtype in PACKED_DTYPES
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and (weight.dtype != torch.bfloat16 or torch.ops.mkldnn._is_mkldnn_bf16_supported())
    )


class Linear:
    """y = act(x·Wᵀ + b) with W [out, in] packed for oneDNN where ``can_pack`` (else ``F.linear``);
    ``activation``: None (identity) or a name of ACTIVATIONS.

    The packed copy is a snapshot: build a new one when the weights change."""

    __slots__ = ("weight", "bias", "packed", "activation")

    def __init__(
        self, weight: Tensor, bias: Optional[Tensor] = None, pack: bool = True, activation: Optional[str] = None
    ) -> None:
        if activation is not None and activation not in ACTIVATIONS:
            raise ValueError(f"activation must be None or one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.packed = pack and can_pack(weight)
        self.weight, self.bias = weight, bias  # unpacked: the parameters themselves (autograd)
        if self.packed:  # a constant copy (no gradient)
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
            self.bias = None if bias is None else bias.detach()

    @classmethod
    def of(cls, module: nn.Linear, pack: bool, activation: Optional[str] = None) -> "Linear":
        """The map of an ``nn.Linear`` (followed by ``activation``)."""
        return cls(module.weight, module.bias, pack, activation)

    def __call__(self, x: Tensor) -> Tensor:
        if self.packed:
            attr, algorithm = ("none", "") if self.activation is None else (self.activation, "none")
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, attr, [], algorithm)
        y = F.linear(x, self.weight, self.bias)
        return y if self.activation is None else ACTIVATIONS[self.activation](y)

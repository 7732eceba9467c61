"""Inference forward of a batch-first ``nn.TransformerEncoder`` with packed linear maps.

The same computation as the module's eval forward, x + SA(LN₁(x)) then x + FFN(LN₂(x)) per
pre-norm layer and a final layer norm (post-norm: LN₁(x + SA(x)) then LN₂(x + FFN(x))), with each layer's linear maps taken from ``encoder_weights``:
packed once for oneDNN on a CPU (``packed_linear``), so a decoding pass does not re-read the
row-major weights through the BLAS. The encoder-decoder model runs it once per batch; DiffuSeq
runs it at every reverse step. The attention and feed-forward blocks are shared with the
cached decoder.
"""
from typing import Callable, List, NamedTuple, Optional

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .packed_linear import Linear, activation_name


class EncoderLayerWeights(NamedTuple):
    """The linear maps of one encoder layer."""

    qkv: Linear
    out: Linear
    ffn_in: Linear
    ffn_out: Linear


def encoder_weights(encoder: nn.TransformerEncoder, pack: bool) -> List[EncoderLayerWeights]:
    """Per layer, its linear maps; with ``pack``, packed for oneDNN on a CPU (a constant
    snapshot of the current parameters)."""
    return [
        EncoderLayerWeights(
            Linear(layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias, pack),
            Linear.of(layer.self_attn.out_proj, pack),
            Linear.of(layer.linear1, pack, activation_name(layer.activation)),
            Linear.of(layer.linear2, pack),
        )
        for layer in encoder.layers
    ]


def split_heads(x: Tensor, heads: int) -> Tensor:
    """[N, L, W] -> [N, H, L, W/H]."""
    n, length, width = x.shape
    return x.view(n, length, heads, width // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[N, H, L, d_h] -> [N, L, H·d_h]."""
    n, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(n, length, heads * dim)


def attended_keys(padding_mask: Optional[Tensor]) -> Optional[Tensor]:
    """The attention mask [N, 1, 1, L] of ``padding_mask`` [N, L] (True at padding): True at the
    keys to attend to; None where no key is padding on a CPU (a source or candidate decoded
    alone), since attention without a mask is faster there at decoding sizes. On a GPU
    the mask is kept: the check would synchronise with the device at every step."""
    if padding_mask is None or (padding_mask.device.type == "cpu" and not padding_mask.any()):
        return None
    return (~padding_mask)[:, None, None, :]


def self_attention(x: Tensor, qkv: Linear, out: Linear, heads: int, keep: Optional[Tensor]) -> Tensor:
    """out(softmax(q kᵀ/√d_h) v) with q, k, v = qkv(x) split into heads; ``keep`` [N, 1, 1, L]
    is True at the keys to attend to (None: all)."""
    q, k, v = qkv(x).chunk(3, dim=-1)
    attended = F.scaled_dot_product_attention(
        split_heads(q, heads), split_heads(k, heads), split_heads(v, heads), keep
    )
    return out(merge_heads(attended))


def feed_forward(x: Tensor, ffn_in: Linear, ffn_out: Linear) -> Tensor:
    """W₂ act(W₁ x + b₁) + b₂ (``ffn_in`` applies the activation)."""
    return ffn_out(ffn_in(x))


def residual(layer: nn.Module, norm: nn.LayerNorm, x: Tensor, block: Callable[[Tensor], Tensor]) -> Tensor:
    """x + f(LN(x)) in a pre-norm ``layer`` (norm_first), LN(x + f(x)) in a post-norm one."""
    return x + block(norm(x)) if layer.norm_first else norm(x + block(x))


def packed_encoder_forward(
    encoder: nn.TransformerEncoder,
    weights: List[EncoderLayerWeights],
    x: Tensor,
    padding_mask: Optional[Tensor],
) -> Tensor:
    """Encoder(x) for x [N, L, W] with the encoder's ``weights``; ``padding_mask`` [N, L] is True
    at padding. Equals ``encoder(x, src_key_padding_mask=padding_mask)`` in eval mode."""
    keep = attended_keys(padding_mask)
    for layer, w in zip(encoder.layers, weights):
        heads = layer.self_attn.num_heads
        x = residual(layer, layer.norm1, x, lambda y: self_attention(y, w.qkv, w.out, heads, keep))
        x = residual(layer, layer.norm2, x, lambda y: feed_forward(y, w.ffn_in, w.ffn_out))
    return x if encoder.norm is None else encoder.norm(x)

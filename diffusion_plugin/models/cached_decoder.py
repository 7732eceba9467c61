"""Inference forward of an ``nn.TransformerDecoder`` (pre- or post-norm layers) with cached cross-attention.

A reverse process runs the decoder K times against the same encoder states, for b = b1·b2
candidates of every source. The cross-attention keys and values K = m W_kᵀ + b_k, V = m W_vᵀ + b_v
therefore depend on the source only: they are computed once per source and decoding pass
(``cross_attention_cache``), not K·b times. The b candidates of a source share them by attending as
one query sequence of b·L rows (attention is row-wise, so this is exact), which also makes the
matrix products larger. Both attentions use ``F.scaled_dot_product_attention`` (the self-attention
and feed-forward blocks are ``packed_encoder``'s). The linear maps are the decoder's own
parameters, packed once for oneDNN on a CPU (``decoder_weights``, see ``packed_linear``), so a
checkpoint decodes the same either way; training keeps torch's module forward.
"""
from functools import partial
from typing import List, NamedTuple, Optional, Tuple

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .packed_encoder import attended_keys, feed_forward, merge_heads, residual, self_attention, split_heads
from .packed_linear import Linear, activation_name

KeyValues = List[Tuple[Tensor, Tensor]]


class LayerWeights(NamedTuple):
    """The linear maps of one decoder layer while decoding (``cross_kv``: once per batch, by
    ``cross_attention_cache``; the others at every step)."""

    self_qkv: Linear
    self_out: Linear
    cross_q: Linear
    cross_kv: Linear
    cross_out: Linear
    ffn_in: Linear
    ffn_out: Linear


def decoder_weights(decoder: nn.TransformerDecoder, pack: bool) -> List[LayerWeights]:
    """Per layer, its decoding-step linear maps; with ``pack``, packed for oneDNN on a CPU (a
    constant snapshot of the current parameters)."""
    linear = partial(Linear, pack=pack)
    layers = []
    for layer in decoder.layers:
        self_attn, cross_attn = layer.self_attn, layer.multihead_attn
        width = cross_attn.embed_dim
        layers.append(
            LayerWeights(
                linear(self_attn.in_proj_weight, self_attn.in_proj_bias),
                Linear.of(self_attn.out_proj, pack),
                linear(cross_attn.in_proj_weight[:width], cross_attn.in_proj_bias[:width]),
                linear(cross_attn.in_proj_weight[width:], cross_attn.in_proj_bias[width:]),
                Linear.of(cross_attn.out_proj, pack),
                Linear.of(layer.linear1, pack, activation_name(layer.activation)),
                Linear.of(layer.linear2, pack),
            )
        )
    return layers


def cross_attention_cache(
    decoder: nn.TransformerDecoder, weights: List[LayerWeights], memory: Tensor
) -> KeyValues:
    """Per layer, the cross-attention (K, V) of the encoder states ``memory`` [B, S, W]: [B, H, S, d_h]."""
    cache = []
    for layer, w in zip(decoder.layers, weights):
        heads = layer.multihead_attn.num_heads
        k, v = w.cross_kv(memory).chunk(2, dim=-1)
        cache.append((split_heads(k, heads), split_heads(v, heads)))
    return cache


def cached_decoder_forward(
    decoder: nn.TransformerDecoder,
    weights: List[LayerWeights],
    h: Tensor,
    padding_mask: Tensor,
    cache: KeyValues,
    memory_keep: Optional[Tensor],
) -> Tensor:
    """Decoder(h) for h [B·b, L, W] (b rows per source, consecutive) against ``cache`` of B
    sources, with the decoder's ``weights``; ``padding_mask`` [B·b, L] is True at padding,
    ``memory_keep`` (``attended_keys`` of the sources' padding, computed once per batch) True
    at the source positions to attend to. Equals ``decoder(h, memory, tgt_key_padding_mask=...,
    memory_key_padding_mask=...)`` in eval mode."""
    rows, length, width = h.shape
    self_keep = attended_keys(padding_mask)  # [B·b, 1, 1, L], True = attend
    for layer, w, (k_mem, v_mem) in zip(decoder.layers, weights, cache):
        heads = layer.self_attn.num_heads
        h = residual(layer, layer.norm1, h, lambda x: self_attention(x, w.self_qkv, w.self_out, heads, self_keep))

        def cross_attention(x: Tensor) -> Tensor:
            q = split_heads(w.cross_q(x).reshape(k_mem.size(0), -1, width), heads)  # a source's b candidates: one query
            out = F.scaled_dot_product_attention(q, k_mem, v_mem, memory_keep)
            return w.cross_out(merge_heads(out).reshape(rows, length, width))

        h = residual(layer, layer.norm2, h, cross_attention)
        h = residual(layer, layer.norm3, h, lambda x: feed_forward(x, w.ffn_in, w.ffn_out))
    return h if decoder.norm is None else decoder.norm(h)

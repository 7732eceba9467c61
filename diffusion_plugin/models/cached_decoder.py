"""Inference forward of a pre-norm ``nn.TransformerDecoder`` with cached cross-attention.

A reverse process runs the decoder K times against the same encoder states, for b = b1·b2
candidates of every source. The cross-attention keys and values K = m W_kᵀ + b_k, V = m W_vᵀ + b_v
therefore depend on the source only: they are computed once per source and decoding pass
(``cross_attention_cache``), not K·b times. The b candidates of a source share them by attending as
one query sequence of b·L rows (attention is row-wise, so this is exact), which also makes the
matrix products larger. Both attentions use ``F.scaled_dot_product_attention``. The parameters
are the decoder's own (no new state), so a checkpoint decodes the same either way; training keeps
torch's module forward.
"""
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

KeyValues = List[Tuple[Tensor, Tensor]]


def _heads(x: Tensor, heads: int) -> Tensor:
    """[N, L, W] -> [N, H, L, W/H]."""
    n, length, width = x.shape
    return x.view(n, length, heads, width // heads).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """[N, H, L, d_h] -> [N, L, H·d_h]."""
    n, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(n, length, heads * dim)


def cross_attention_cache(decoder: nn.TransformerDecoder, memory: Tensor) -> KeyValues:
    """Per layer, the cross-attention (K, V) of the encoder states ``memory`` [B, S, W]: [B, H, S, d_h]."""
    cache = []
    for layer in decoder.layers:
        attention = layer.multihead_attn
        width = attention.embed_dim
        weight, bias = attention.in_proj_weight[width:], attention.in_proj_bias[width:]
        k, v = F.linear(memory, weight, bias).chunk(2, dim=-1)
        cache.append((_heads(k, attention.num_heads), _heads(v, attention.num_heads)))
    return cache


def cached_decoder_forward(
    decoder: nn.TransformerDecoder,
    h: Tensor,
    padding_mask: Tensor,
    cache: KeyValues,
    memory_padding_mask: Tensor,
) -> Tensor:
    """Decoder(h) for h [B·b, L, W] (b rows per source, consecutive) against ``cache`` of B
    sources; ``padding_mask`` [B·b, L] and ``memory_padding_mask`` [B, S] are True at padding.
    Equals ``decoder(h, memory, tgt_key_padding_mask=..., memory_key_padding_mask=...)`` in eval mode."""
    rows, length, width = h.shape
    sources = memory_padding_mask.size(0)
    per_source = rows // sources
    self_keep = (~padding_mask)[:, None, None, :]  # [B·b, 1, 1, L], True = attend
    memory_keep = (~memory_padding_mask)[:, None, None, :]  # [B, 1, 1, S]
    for layer, (k_mem, v_mem) in zip(decoder.layers, cache):
        attention = layer.self_attn
        heads = attention.num_heads
        q, k, v = F.linear(layer.norm1(h), attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(_heads(q, heads), _heads(k, heads), _heads(v, heads), self_keep)
        h = h + attention.out_proj(_merge(out))

        attention = layer.multihead_attn
        q = F.linear(layer.norm2(h), attention.in_proj_weight[:width], attention.in_proj_bias[:width])
        q = _heads(q.reshape(sources, per_source * length, width), heads)  # b candidates as one query
        out = F.scaled_dot_product_attention(q, k_mem, v_mem, memory_keep)
        h = h + attention.out_proj(_merge(out).reshape(rows, length, width))

        h = h + layer.linear2(layer.activation(layer.linear1(layer.norm3(h))))
    return decoder.norm(h)

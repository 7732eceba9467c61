"""Encoder-decoder embedding-diffusion denoiser (Difformer / SeqDiffuSeq), registered with fairseq.

The encoder reads the source once; the decoder maps (z_t, t, [ẑ_0^prev]) to ẑ_0 with full
(non-causal) self-attention and cross-attention to the encoder.  Embeddings live in the latent
width d (``--latent-dim``) and are projected to and from the model width.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional

import torch
from torch import Tensor, nn

from fairseq.models import register_model

from .base import (
    DiffusionConfig,
    DiffusionModel,
    apply_attention_dropout,
    apply_bert_init,
    attention_padding_mask,
    build_positions,
    final_norm,
    register_architectures,
    transformer_layer_args,
)
from .cached_decoder import LayerWeights, cached_decoder_forward, cross_attention_cache, decoder_weights
from .modules import (
    LatentEmbedding,
    TimestepEmbedding,
    masked_mean,
    padded_positions,
    rms_normalized,
)
from .packed_encoder import EncoderLayerWeights, attended_keys, encoder_weights, packed_encoder_forward
from .packed_linear import Linear

LENGTH_OFFSETS = 256  # classes for target length − source length in [−128, 127]


@dataclass
class DiffusionTransformerConfig(DiffusionConfig):
    encoder_layers: int = field(default=6, metadata={"help": "encoder layers"})
    decoder_layers: int = field(default=6, metadata={"help": "decoder (denoiser) layers"})
    self_cond: bool = field(
        default=False, metadata={"help": "self-conditioning on the previous ẑ_0 (SeqDiffuSeq)"}
    )
    share_all_embeddings: bool = field(
        default=False, metadata={"help": "one embedding table for source and target (joined dict)"}
    )
    input_norm: bool = field(
        default=False,
        metadata={"help": "RMS-normalise each position of z_t before the denoiser's input map, "
                  "so its scale (sqrt(ᾱ' + β̄') per coordinate: up to F in training, 1 in "
                  "decoding) is the same at every t, in training and decoding"},
    )
    diffuse_bos_eos: bool = field(
        default=False,
        metadata={"help": "diffuse [BOS] y [EOS] (the Difformer authors' target layout) instead "
                  "of y alone: the length predictor counts both ends, decoding fixes them "
                  "(clamped to E(BOS), E(EOS)) and drops them from the hypothesis"},
    )
    max_source_positions: int = field(default=1024, metadata={"help": "max source length"})
    max_target_positions: int = field(default=1024, metadata={"help": "max target length"})


class DecodingWeights(NamedTuple):
    """The linear maps decoding applies: the encoder's, then each reverse step's."""

    encoder_in: Linear
    encoder: List[EncoderLayerWeights]
    decoder_in: Linear
    decoder: List[LayerWeights]
    decoder_out: Linear


@register_model("diffusion_transformer", dataclass=DiffusionTransformerConfig)
class DiffusionTransformerModel(DiffusionModel):
    """Difformer-style encoder-decoder denoiser ẑ_0 = f(z_t, x, t)."""

    config_class = DiffusionTransformerConfig

    def __init__(self, cfg: Any, src_dict: Any, tgt_dict: Any) -> None:
        super().__init__(cfg, src_dict, tgt_dict)
        d, width = cfg.latent_dim, cfg.model_dim
        self.src_embed = (
            self.embed
            if cfg.share_all_embeddings
            else LatentEmbedding(len(src_dict), d, self.src_pad, cfg.embed_norm,
                                 affine=bool(getattr(cfg, "embed_norm_affine", False)))
        )
        self.encoder_in = nn.Linear(d, width)
        self.self_cond = bool(cfg.self_cond)  # read at every step: not through omegaconf (~50 µs)
        self.input_norm = bool(getattr(cfg, "input_norm", False))
        self.max_target_positions = int(cfg.max_target_positions)
        self.ends = int(bool(getattr(cfg, "diffuse_bos_eos", False)))
        self.bos = tgt_dict.bos()
        self.decoder_in = nn.Linear(2 * d if self.self_cond else d, width)
        self.decoder_out = nn.Linear(width, d)
        self.positions = build_positions(cfg, cfg.max_source_positions)
        self.target_positions = (
            build_positions(cfg, cfg.max_target_positions)
            if getattr(cfg, "learned_positions", False)
            else self.positions
        )
        self.time_embed = TimestepEmbedding(width, cfg.diffusion_steps)
        self.dropout = nn.Dropout(cfg.dropout)
        layer_args = transformer_layer_args(cfg)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**layer_args),
            cfg.encoder_layers,
            norm=final_norm(cfg),
            enable_nested_tensor=False,
        )
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(**layer_args), cfg.decoder_layers, norm=final_norm(cfg)
        )
        self.length_head = nn.Linear(width, LENGTH_OFFSETS)
        apply_attention_dropout(self, cfg.attention_dropout)
        if getattr(cfg, "bert_init", False):
            apply_bert_init(self)

    @classmethod
    def build_model(cls, cfg: Any, task: Any) -> "DiffusionTransformerModel":
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        if cfg.share_all_embeddings and src_dict != tgt_dict:
            raise ValueError(
                "--share-all-embeddings requires a joined dictionary "
                "(binarise with fairseq-preprocess --joined-dictionary)"
            )
        return cls(cfg, src_dict, tgt_dict)

    def max_positions(self):
        """fairseq's length filter: a target (with its EOS) of n + 1 tokens fills n + 2 diffused
        positions with --diffuse-bos-eos, so the longest one kept is one shorter."""
        return (self.cfg.max_source_positions, self.cfg.max_target_positions - self.ends)

    # --- encoder and length predictor -------------------------------------------------------

    def encode(self, src_tokens: Tensor) -> Dict[str, Tensor]:
        """Encoder states [B, S, D] and the source padding mask [B, S]."""
        padding_mask = src_tokens.eq(self.src_pad)
        weights = self.decoding_weights() if self.decoding else None
        encoder_in = self.encoder_in if weights is None else weights.encoder_in
        x = encoder_in(self.src_embed(src_tokens)) + self.positions(padded_positions(padding_mask))
        mask = attention_padding_mask(padding_mask)
        if weights is None:
            out = self.encoder(self.dropout(x), src_key_padding_mask=mask)
        else:
            out = packed_encoder_forward(self.encoder, weights.encoder, x, mask)
        return {"out": out, "padding_mask": padding_mask}

    def length_logits(self, encoder_out: Dict[str, Tensor]) -> Tensor:
        """Logits over target-length offsets n − m + 128 from mean-pooled encoder states."""
        return self.length_head(masked_mean(encoder_out["out"], encoder_out["padding_mask"]))

    def length_offset_target(self, src_lengths: Tensor, tgt_lengths: Tensor) -> Tensor:
        """Class index of the offset n − m, clamped to the predictor's range."""
        half = LENGTH_OFFSETS // 2
        return (tgt_lengths - src_lengths + half).clamp(0, LENGTH_OFFSETS - 1)

    def predict_lengths(self, encoder_out: Dict[str, Tensor], beam: int) -> Tensor:
        """Top-``beam`` target lengths per source (tokens, without the diffused ends), best first,
        clamped to [1, max target − ends]: [B, beam]."""
        src_lengths = (~encoder_out["padding_mask"]).sum(dim=1, keepdim=True)
        offsets = self.length_logits(encoder_out).topk(beam, dim=-1).indices
        lengths = src_lengths + offsets - LENGTH_OFFSETS // 2 - 2 * self.ends
        return lengths.clamp(1, self.max_target_positions - 2 * self.ends)

    def length_log_probs(self, encoder_out: Dict[str, Tensor], lengths: Tensor) -> Tensor:
        """log p(n | x) of the length predictor at the target lengths ``lengths`` [B, b] (tokens,
        without the diffused ends)."""
        src_lengths = (~encoder_out["padding_mask"]).sum(dim=1, keepdim=True)
        lprobs = torch.log_softmax(self.length_logits(encoder_out).float(), dim=-1)
        return lprobs.gather(1, self.length_offset_target(src_lengths, lengths + 2 * self.ends))

    def diffusion_targets(self, tgt_tokens: Tensor) -> Tensor:
        """The diffused sequence: the target without its EOS, or with --diffuse-bos-eos
        [BOS] y [EOS] (fairseq's right-padded target behind a BOS column)."""
        if not self.ends:
            return super().diffusion_targets(tgt_tokens)
        return torch.cat([tgt_tokens.new_full((tgt_tokens.size(0), 1), self.bos), tgt_tokens], dim=1)

    # --- denoiser ---------------------------------------------------------------------------

    def decoding_state(self, encoder_out: Dict[str, Tensor], per_source: int) -> Dict[str, Any]:
        """The source padding mask and its attention mask, every layer's cross-attention keys and
        values, computed once per source and shared by its ``per_source`` candidates
        (``cached_decoder``), and the linear maps (``decoding_weights``)."""
        weights = self.decoding_weights()
        return {
            "padding_mask": encoder_out["padding_mask"],
            "memory_keep": attended_keys(attention_padding_mask(encoder_out["padding_mask"])),
            "cross_attention": cross_attention_cache(self.decoder, weights.decoder, encoder_out["out"]),
            "weights": weights,
        }

    def pack_weights(self, pack: bool) -> DecodingWeights:
        return DecodingWeights(
            Linear.of(self.encoder_in, pack),
            encoder_weights(self.encoder, pack),
            Linear.of(self.decoder_in, pack),
            decoder_weights(self.decoder, pack),
            Linear.of(self.decoder_out, pack),
        )

    def denoise(
        self,
        z_t: Tensor,
        t: Tensor,
        encoder_out: Dict[str, Tensor],
        padding_mask: Tensor,
        z0_prev: Optional[Tensor] = None,
    ) -> Tensor:
        """ẑ_0 = proj_out(Decoder(proj_in([z_t; ẑ_0^prev]) + e(t) + pos, encoder states)), in the
        network's precision whatever the precision of the chain z_t (with --input-norm, z_t
        enters as z_t / RMS(z_t) per position)."""
        z_t = z_t.to(self.decoder_in.weight.dtype)
        if self.input_norm:
            z_t = rms_normalized(z_t)
        if self.self_cond:
            z0_prev = torch.zeros_like(z_t) if z0_prev is None else z0_prev.to(z_t.dtype)
            z_t = torch.cat([z_t, z0_prev], dim=-1)
        weights = encoder_out.get("weights")  # generation: a decoding_state
        decoder_in = self.decoder_in if weights is None else weights.decoder_in
        h = decoder_in(z_t) + self.time_embed(t).unsqueeze(1) + self.target_positions(padded_positions(padding_mask))
        if weights is None:
            h = self.decoder(
                self.dropout(h),
                encoder_out["out"],
                tgt_key_padding_mask=attention_padding_mask(padding_mask),
                memory_key_padding_mask=attention_padding_mask(encoder_out["padding_mask"]),
            )
            return self.decoder_out(h)
        h = cached_decoder_forward(
            self.decoder,
            weights.decoder,
            h,
            attention_padding_mask(padding_mask),
            encoder_out["cross_attention"],
            encoder_out["memory_keep"],
        )
        return weights.decoder_out(h)

    def forward(
        self, src_tokens: Tensor, src_lengths: Tensor, tgt_tokens: Tensor, timesteps: Tensor, **unused
    ) -> Dict[str, Tensor]:
        """One training draw: z_t ~ q(z_t | z_0 = E(y)) at ``timesteps``, then ẑ_0 = f(z_t, x, t).

        Self-conditioning (training): with probability 1/2 per batch the denoiser first runs
        without gradient and its ẑ_0 is fed back as ẑ_0^prev; otherwise ẑ_0^prev = 0.
        """
        encoder_out = self.encode(src_tokens)
        target = self.diffusion_targets(tgt_tokens)
        padding_mask = target.eq(self.pad)
        z0 = self.embed(target)
        z_t = self.noised(z0, timesteps)
        z0_prev = None
        if self.self_cond and self.training and torch.rand(()) < 0.5:
            with torch.no_grad():
                z0_prev = self.denoise(z_t, timesteps, encoder_out, padding_mask).detach()
        z0_hat = self.denoise(z_t, timesteps, encoder_out, padding_mask, z0_prev)
        src_lengths = (~encoder_out["padding_mask"]).sum(dim=1)
        tgt_lengths = (~padding_mask).sum(dim=1)
        return {
            "z0": z0,
            "z0_hat": z0_hat,
            "target": target,
            "mask": ~padding_mask,
            "length_logits": self.length_logits(encoder_out),
            "length_target": self.length_offset_target(src_lengths, tgt_lengths),
        }


# SeqDiffuSeq Table 6 (translation): 6+6 layers, emb 128, GeLU, input/output lengths 128/64,
# self-conditioning, sqrt-initialised adaptive schedule (refit every 20K updates, K = 20), no
# noise rescaling
SEQDIFFUSEQ_TRANSLATION: Dict[str, Any] = dict(
    model_dim=512, ffn_dim=2048, attention_heads=8, dropout=0.3, activation_fn="gelu",
    self_cond=True, adaptive_schedule=True, max_source_positions=128, max_target_positions=64,
    rescaling_factor="1",
)

ARCHITECTURES: Dict[str, Dict[str, Any]] = {
    # tests and the quickstart: a few minutes on 2 CPU cores
    "diffusion_transformer_tiny": dict(
        encoder_layers=2, decoder_layers=2, model_dim=128, ffn_dim=256, attention_heads=4,
        latent_dim=64, dropout=0.1, embed_norm=True, self_cond=True,
    ),
    # Difformer Table 21
    "difformer_iwslt_de_en": dict(
        model_dim=512, ffn_dim=1024, attention_heads=4, dropout=0.3, embed_norm=True,
        self_cond=True, rescaling_factor="4",
    ),
    "difformer_wmt_en_de": dict(
        model_dim=512, ffn_dim=2048, attention_heads=8, dropout=0.1, embed_norm=True,
        self_cond=True, rescaling_factor="4",
    ),
    "difformer_base": dict(
        model_dim=768, ffn_dim=3072, attention_heads=12, dropout=0.1, embed_norm=True,
        self_cond=True, rescaling_factor="4",
    ),
    "seqdiffuseq_iwslt_de_en": SEQDIFFUSEQ_TRANSLATION,
    "seqdiffuseq_wmt_en_de": SEQDIFFUSEQ_TRANSLATION,
    # Table 6, non-translation tasks (paraphrase, simplification, question generation, dialogue)
    "seqdiffuseq_base": dict(
        SEQDIFFUSEQ_TRANSLATION, model_dim=768, ffn_dim=3072, attention_heads=12, dropout=0.1
    ),
}

register_architectures("diffusion_transformer", DiffusionTransformerConfig, ARCHITECTURES)

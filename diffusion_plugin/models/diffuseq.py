"""DiffuSeq (Gong et al., ICLR 2023, §3): one transformer encoder over [E(x) ; z_t(y)].

* Partial noising: only the target part is noised,
  z_t = [E(x) ; sqrt(ᾱ'_t) E(y) + sqrt(β̄'_t) ε], and only the target part of ẑ_0 is scored.
* Anchoring: every reverse step feeds the network [E(x) ; z_t(y)], i.e. the source part of the
  step's output is replaced by the clean E(x), exactly as in training.
* Joint embedding: one table E for source and target (requires a joined dictionary).
* Length from padding: the target part of a source of m tokens (with its EOS, the separator) has
  L = min(--max-target-positions, --max-positions − m) positions, y followed by padding; padding
  is an ordinary, trained symbol, and a hypothesis ends at its first generated padding token.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional

import torch
import torch.nn.functional as F
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
from .modules import TimestepEmbedding, padded_positions
from .packed_encoder import EncoderLayerWeights, encoder_weights, packed_encoder_forward
from .packed_linear import Linear


@dataclass
class DiffuSeqConfig(DiffusionConfig):
    layers: int = field(default=12, metadata={"help": "transformer (encoder-only) layers"})
    max_positions: int = field(
        default=128,
        metadata={"help": "sequence budget: source tokens (with EOS) + target part <= this"},
    )
    max_target_positions: int = field(
        default=128, metadata={"help": "at most this many target-part positions (longest output)"}
    )


class DecodingWeights(NamedTuple):
    """The linear maps of a reverse step."""

    proj_in: Linear
    layers: List[EncoderLayerWeights]
    proj_out: Linear


@register_model("diffuseq", dataclass=DiffuSeqConfig)
class DiffuSeqModel(DiffusionModel):
    """Encoder-only denoiser ẑ_0(y) = f([E(x) ; z_t(y)], t)[target part]."""

    config_class = DiffuSeqConfig
    length_from_padding = True

    def __init__(self, cfg: Any, src_dict: Any, tgt_dict: Any) -> None:
        if src_dict != tgt_dict:
            raise ValueError(
                "diffuseq embeds source and target with one joint table: it needs a joined "
                "dictionary (binarise with fairseq-preprocess --joined-dictionary), but "
                f"dict.src has {len(src_dict)} symbols and dict.tgt {len(tgt_dict)} and they differ"
            )
        if cfg.max_target_positions < 1 or cfg.max_positions < 2:
            raise ValueError(
                f"--max-positions must be >= 2 and --max-target-positions >= 1, got "
                f"{cfg.max_positions} and {cfg.max_target_positions}"
            )
        super().__init__(cfg, src_dict, tgt_dict)
        d, width = cfg.latent_dim, cfg.model_dim
        self.src_embed = self.embed  # the joint table
        self.proj_in = nn.Linear(d, width)
        self.proj_out = nn.Linear(width, d)
        self.positions = build_positions(cfg, cfg.max_positions)
        self.time_embed = TimestepEmbedding(width, cfg.diffusion_steps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.transformer = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**transformer_layer_args(cfg)),
            cfg.layers,
            norm=final_norm(cfg),
            enable_nested_tensor=False,
        )
        apply_attention_dropout(self, cfg.attention_dropout)
        if getattr(cfg, "bert_init", False):
            apply_bert_init(self)

    @classmethod
    def build_model(cls, cfg: Any, task: Any) -> "DiffuSeqModel":
        return cls(cfg, task.source_dictionary, task.target_dictionary)

    def max_positions(self):
        """Per-side limits for fairseq's size filter; the joint budget is checked per batch."""
        return (self.cfg.max_positions - 1, self.cfg.max_target_positions)

    def encode(self, src_tokens: Tensor) -> Dict[str, Tensor]:
        """The anchor x_0 = E(x) [B, S, d] and the source padding mask [B, S]."""
        padding_mask = src_tokens.eq(self.src_pad)
        longest = int((~padding_mask).sum(dim=1).max())
        if longest > self.cfg.max_positions - 1:
            raise ValueError(
                f"a source of {longest} tokens (with EOS) leaves no target position within "
                f"--max-positions {self.cfg.max_positions}: raise --max-positions or cut sources "
                f"with --truncate-source --max-source-positions {self.cfg.max_positions - 1}"
            )
        return {"x0": self.embed(src_tokens), "padding_mask": padding_mask}

    def target_budget(self, encoder_out: Dict[str, Tensor]) -> Tensor:
        """Target-part positions of each source: L = min(max target, max positions − m), [B]."""
        src_lengths = (~encoder_out["padding_mask"]).sum(dim=1)
        return (self.cfg.max_positions - src_lengths).clamp(max=self.cfg.max_target_positions)

    def predict_lengths(self, encoder_out: Dict[str, Tensor], beam: int) -> Tensor:
        """No length predictor: every candidate gets the whole target budget, [B, beam]."""
        return self.target_budget(encoder_out).unsqueeze(1).repeat(1, beam)

    def decoding_state(self, encoder_out: Dict[str, Tensor], per_source: int) -> Dict[str, Any]:
        """The anchor and source mask, repeated for ``per_source`` candidates, and the linear
        maps (``decoding_weights``)."""
        return {**super().decoding_state(encoder_out, per_source), "weights": self.decoding_weights()}

    def pack_weights(self, pack: bool) -> DecodingWeights:
        return DecodingWeights(
            Linear.of(self.proj_in, pack),
            encoder_weights(self.transformer, pack),
            Linear.of(self.proj_out, pack),
        )

    def denoise(
        self,
        z_t: Tensor,
        t: Tensor,
        encoder_out: Dict[str, Tensor],
        padding_mask: Tensor,
        z0_prev: Optional[Tensor] = None,
    ) -> Tensor:
        """ẑ_0(y) = proj_out(Transformer(proj_in([x_0 ; z_t]) + e(t) + pos))[target part].

        The source part is always the clean x_0: partial noising in training, anchoring in
        generation.  ``z0_prev`` belongs to the generator's interface (no self-conditioning).
        """
        x0, src_mask = encoder_out["x0"], encoder_out["padding_mask"]
        z = torch.cat([x0, z_t.to(x0.dtype)], dim=1)  # the network's precision
        mask = torch.cat([src_mask, padding_mask], dim=1)
        weights = encoder_out.get("weights")  # generation: a decoding_state
        proj_in = self.proj_in if weights is None else weights.proj_in
        h = proj_in(z) + self.time_embed(t).unsqueeze(1) + self.positions(padded_positions(mask))
        if weights is None:
            h = self.transformer(self.dropout(h), src_key_padding_mask=attention_padding_mask(mask))
            return self.proj_out(h[:, x0.size(1) :])
        h = packed_encoder_forward(self.transformer, weights.layers, h, attention_padding_mask(mask))
        return weights.proj_out(h[:, x0.size(1) :])

    def forward(
        self, src_tokens: Tensor, src_lengths: Tensor, tgt_tokens: Tensor, timesteps: Tensor, **unused
    ) -> Dict[str, Tensor]:
        """One training draw on the target part [y ; padding] of L positions per row; ``mask``
        marks the positions scored by the loss (all L, padding included, as in the paper)."""
        encoder_out = self.encode(src_tokens)
        budget = self.target_budget(encoder_out)
        target = self.diffusion_targets(tgt_tokens)
        too_long = target.ne(self.pad).sum(dim=1) > budget
        if too_long.any():
            row = int(too_long.nonzero()[0])
            raise ValueError(
                f"source ({int(src_lengths[row])} tokens with EOS) + target "
                f"({int(target[row].ne(self.pad).sum())} tokens) exceed the sequence budget "
                f"--max-positions {self.cfg.max_positions} / --max-target-positions "
                f"{self.cfg.max_target_positions}: raise them or cut sources with "
                "--truncate-source --max-source-positions N"
            )
        width = int(budget.max())
        target = F.pad(target, (0, max(width - target.size(1), 0)), value=self.pad)[:, :width]
        mask = torch.arange(width, device=target.device) < budget.unsqueeze(1)
        z0 = self.embed(target)
        z0_hat = self.denoise(self.noised(z0, timesteps), timesteps, encoder_out, ~mask)
        return {"z0": z0, "z0_hat": z0_hat, "target": target, "mask": mask}


ARCHITECTURES: Dict[str, Dict[str, Any]] = {
    # tests: seconds on 2 CPU cores
    "diffuseq_tiny": dict(
        layers=2, model_dim=128, ffn_dim=256, attention_heads=4, latent_dim=64, dropout=0.1,
    ),
    # DiffuSeq §4.1: 12 layers, 12 heads, width 768 (BERT-base), d = 128, T = 2000, sqrt, 128
    # tokens, no noise rescaling
    "diffuseq_base": dict(
        layers=12, model_dim=768, ffn_dim=3072, attention_heads=12, latent_dim=128, dropout=0.1,
        activation_fn="gelu", rescaling_factor="1",
    ),
}

register_architectures("diffuseq", DiffuSeqConfig, ARCHITECTURES)

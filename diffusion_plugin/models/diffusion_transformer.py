"""Encoder-decoder embedding-diffusion denoiser (Difformer / SeqDiffuSeq), registered with fairseq.

The encoder reads the source once; the decoder maps (z_t, t, [ẑ_0^prev]) to ẑ_0 with full
(non-causal) self-attention and cross-attention to the encoder.  Embeddings live in the latent
width d (``--latent-dim``) and are projected to and from the model width.
"""

import argparse
import logging
import zlib
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture

from ..diffusion.samplers import q_sample
from ..diffusion.schedules import SCHEDULES, NoiseSchedule, alphas_cumprod
from .modules import (
    LatentEmbedding,
    SinusoidalPositions,
    TimestepEmbedding,
    masked_mean,
    padded_positions,
)

logger = logging.getLogger(__name__)

LENGTH_OFFSETS = 256  # classes for target length − source length in [−128, 127]


@dataclass
class DiffusionTransformerConfig(FairseqDataclass):
    encoder_layers: int = field(default=6, metadata={"help": "encoder layers"})
    decoder_layers: int = field(default=6, metadata={"help": "decoder (denoiser) layers"})
    model_dim: int = field(default=512, metadata={"help": "transformer width d_model"})
    ffn_dim: int = field(default=2048, metadata={"help": "feed-forward width"})
    attention_heads: int = field(default=8, metadata={"help": "attention heads"})
    dropout: float = field(default=0.1, metadata={"help": "dropout"})
    attention_dropout: float = field(default=0.0, metadata={"help": "attention dropout"})
    activation_fn: ChoiceEnum(["relu", "gelu"]) = field(  # type: ignore[valid-type]
        default="relu", metadata={"help": "activation in feed-forward layers"}
    )
    latent_dim: int = field(default=128, metadata={"help": "embedding (diffusion) width d"})
    embed_norm: bool = field(
        default=False, metadata={"help": "layer-norm the embeddings (Difformer), σ_e ≈ 1"}
    )
    self_cond: bool = field(
        default=False, metadata={"help": "self-conditioning on the previous ẑ_0 (SeqDiffuSeq)"}
    )
    share_all_embeddings: bool = field(
        default=False, metadata={"help": "one embedding table for source and target (joined dict)"}
    )
    diffusion_steps: int = field(default=2000, metadata={"help": "diffusion steps T"})
    noise_schedule: ChoiceEnum(SCHEDULES) = field(  # type: ignore[valid-type]
        default="sqrt", metadata={"help": "named noise schedule"}
    )
    rescaling_factor: str = field(
        default="1",
        metadata={
            "help": "Difformer noise rescaling factor F (training noise F²β̄), or 'auto': the "
            "smallest F on a 0.5 grid whose degeneration score is <= --dgs-max for this "
            "vocabulary size, latent width, schedule and T (computed once at model build and "
            "stored in the checkpoint)"
        },
    )
    dgs_max: float = field(
        default=0.15, metadata={"help": "degeneration-score threshold for --rescaling-factor auto"}
    )
    vp_rescaling: bool = field(
        default=False, metadata={"help": "variance-preserving rescaling (Difformer Eq. 8)"}
    )
    max_source_positions: int = field(default=1024, metadata={"help": "max source length"})
    max_target_positions: int = field(default=1024, metadata={"help": "max target length"})


def check_config(cfg: Any) -> None:
    """Reject impossible settings with messages naming the flag."""
    if cfg.diffusion_steps < 1:
        raise ValueError(f"--diffusion-steps must be >= 1, got {cfg.diffusion_steps}")
    if str(cfg.noise_schedule) not in SCHEDULES:
        raise ValueError(
            f"unknown --noise-schedule {cfg.noise_schedule!r}; choose one of {', '.join(SCHEDULES)}"
        )
    if str(cfg.rescaling_factor) != "auto":
        try:
            factor = float(cfg.rescaling_factor)
        except ValueError:
            raise ValueError(
                f"--rescaling-factor must be a number >= 0 or 'auto', got {cfg.rescaling_factor!r}"
            ) from None
        if factor < 0:
            raise ValueError(f"--rescaling-factor must be >= 0, got {cfg.rescaling_factor}")
    elif not 0.0 < cfg.dgs_max < 1.0:
        raise ValueError(f"--dgs-max must be in (0, 1), got {cfg.dgs_max}")
    if cfg.model_dim % cfg.attention_heads:
        raise ValueError(
            f"--model-dim {cfg.model_dim} must be divisible by --attention-heads {cfg.attention_heads}"
        )


def resolve_rescaling_factor(cfg: Any, vocab_size: int) -> float:
    """F from the flag; for 'auto', Difformer Algorithm 1 (F = 1, 1.5, … until DGS <= DGS_max),
    written back into ``cfg`` so the checkpoint stores the number and generation never searches."""
    if str(cfg.rescaling_factor) != "auto":
        return float(cfg.rescaling_factor)
    from ..diffusion.degeneration import search_rescaling_factor

    result = search_rescaling_factor(
        alphas_cumprod(str(cfg.noise_schedule), cfg.diffusion_steps),
        cfg.dgs_max,
        vocab_size=vocab_size,
        dim=cfg.latent_dim,
        variance_preserving=cfg.vp_rescaling,
    )
    logger.info(
        "--rescaling-factor auto: F = %g (DGS %.4f <= %g; V=%d, d=%d, %s schedule, T=%d)",
        result.factor, result.dgs, cfg.dgs_max, vocab_size, cfg.latent_dim,
        cfg.noise_schedule, cfg.diffusion_steps,
    )
    cfg.rescaling_factor = f"{result.factor:g}"
    return result.factor


def dictionary_fingerprint(dictionary: Any) -> int:
    """CRC32 of the symbol list: identifies the dictionary a checkpoint was trained with."""
    return zlib.crc32("\n".join(dictionary.symbols).encode("utf-8"))


def attention_padding_mask(padding_mask: Tensor) -> Tensor:
    """Padding mask safe for attention: a fully padded row attends to all its positions
    (its outputs are ignored by the loss) instead of producing NaN."""
    return padding_mask & ~padding_mask.all(dim=1, keepdim=True)


@register_model("diffusion_transformer", dataclass=DiffusionTransformerConfig)
class DiffusionTransformerModel(BaseFairseqModel):
    """Difformer-style encoder-decoder denoiser ẑ_0 = f(z_t, x, t)."""

    def __init__(self, cfg: Any, src_dict: Any, tgt_dict: Any) -> None:
        super().__init__()
        check_config(cfg)
        self.cfg = cfg
        self.pad = tgt_dict.pad()
        self.eos = tgt_dict.eos()
        self.src_pad = src_dict.pad()
        d, width = cfg.latent_dim, cfg.model_dim

        self.embed = LatentEmbedding(len(tgt_dict), d, self.pad, cfg.embed_norm)
        self.src_embed = (
            self.embed
            if cfg.share_all_embeddings
            else LatentEmbedding(len(src_dict), d, self.src_pad, cfg.embed_norm)
        )
        self.encoder_in = nn.Linear(d, width)
        self.decoder_in = nn.Linear(2 * d if cfg.self_cond else d, width)
        self.decoder_out = nn.Linear(width, d)
        self.positions = SinusoidalPositions(width)
        self.time_embed = TimestepEmbedding(width)
        self.dropout = nn.Dropout(cfg.dropout)
        layer_args = dict(
            d_model=width,
            nhead=cfg.attention_heads,
            dim_feedforward=cfg.ffn_dim,
            dropout=cfg.dropout,
            activation=str(cfg.activation_fn),
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**layer_args),
            cfg.encoder_layers,
            norm=nn.LayerNorm(width),
            enable_nested_tensor=False,
        )
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(**layer_args), cfg.decoder_layers, norm=nn.LayerNorm(width)
        )
        self.length_head = nn.Linear(width, LENGTH_OFFSETS)
        self.schedule = NoiseSchedule(str(cfg.noise_schedule), cfg.diffusion_steps)
        self.rescaling_factor = resolve_rescaling_factor(cfg, len(tgt_dict))
        fingerprint = [dictionary_fingerprint(src_dict), dictionary_fingerprint(tgt_dict)]
        self.register_buffer("dictionary_fingerprint", torch.tensor(fingerprint))

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """Dataclass flags without defaults, so architectures can set them; each boolean
        technique gets ``--X/--no-X`` so an architecture's choice can be ablated."""
        for f in fields(DiffusionTransformerConfig):
            if f.type is bool:
                parser.add_argument(
                    "--" + f.name.replace("_", "-"),
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=f.metadata.get("help"),
                )
        gen_parser_from_dataclass(parser, DiffusionTransformerConfig(), delete_default=True)

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
        return (self.cfg.max_source_positions, self.cfg.max_target_positions)

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        """Refuse checkpoints trained with other dictionaries before shapes get compared."""
        stored = state_dict.get("dictionary_fingerprint")
        if stored is not None and not torch.equal(stored.cpu(), self.dictionary_fingerprint.cpu()):
            raise ValueError(
                "checkpoint dictionary does not match the data: the checkpoint was trained with "
                f"dictionaries of fingerprint {stored.tolist()}, the data directory has "
                f"{self.dictionary_fingerprint.tolist()} (source, target); use the data-bin "
                "(dict.*.txt) the model was trained on"
            )
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)

    # --- encoder and length predictor -------------------------------------------------------

    def encode(self, src_tokens: Tensor) -> Dict[str, Tensor]:
        """Encoder states [B, S, D] and the source padding mask [B, S]."""
        padding_mask = src_tokens.eq(self.src_pad)
        x = self.encoder_in(self.src_embed(src_tokens)) + self.positions(padded_positions(padding_mask))
        out = self.encoder(self.dropout(x), src_key_padding_mask=attention_padding_mask(padding_mask))
        return {"out": out, "padding_mask": padding_mask}

    def length_logits(self, encoder_out: Dict[str, Tensor]) -> Tensor:
        """Logits over target-length offsets n − m + 128 from mean-pooled encoder states."""
        return self.length_head(masked_mean(encoder_out["out"], encoder_out["padding_mask"]))

    def length_offset_target(self, src_lengths: Tensor, tgt_lengths: Tensor) -> Tensor:
        """Class index of the offset n − m, clamped to the predictor's range."""
        half = LENGTH_OFFSETS // 2
        return (tgt_lengths - src_lengths + half).clamp(0, LENGTH_OFFSETS - 1)

    def predict_lengths(self, encoder_out: Dict[str, Tensor], beam: int) -> Tensor:
        """Top-``beam`` target lengths per source, best first, clamped to [1, max target]: [B, beam]."""
        src_lengths = (~encoder_out["padding_mask"]).sum(dim=1, keepdim=True)
        offsets = self.length_logits(encoder_out).topk(beam, dim=-1).indices
        lengths = src_lengths + offsets - LENGTH_OFFSETS // 2
        return lengths.clamp(1, self.cfg.max_target_positions)

    # --- denoiser ---------------------------------------------------------------------------

    def denoise(
        self,
        z_t: Tensor,
        t: Tensor,
        encoder_out: Dict[str, Tensor],
        padding_mask: Tensor,
        z0_prev: Optional[Tensor] = None,
    ) -> Tensor:
        """ẑ_0 = proj_out(Decoder(proj_in([z_t; ẑ_0^prev]) + e(t) + pos, encoder states))."""
        if self.cfg.self_cond:
            z_t = torch.cat([z_t, torch.zeros_like(z_t) if z0_prev is None else z0_prev], dim=-1)
        h = self.decoder_in(z_t) + self.time_embed(t).unsqueeze(1) + self.positions(padded_positions(padding_mask))
        h = self.decoder(
            self.dropout(h),
            encoder_out["out"],
            tgt_key_padding_mask=attention_padding_mask(padding_mask),
            memory_key_padding_mask=attention_padding_mask(encoder_out["padding_mask"]),
        )
        return self.decoder_out(h)

    def diffusion_targets(self, tgt_tokens: Tensor) -> Tensor:
        """The diffused sequence: the target without its EOS (lengths count real tokens)."""
        return tgt_tokens.masked_fill(tgt_tokens.eq(self.eos), self.pad)

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
        signal, noise_var = self.schedule.coefficients(
            timesteps, target.size(1), self.rescaling_factor, self.cfg.vp_rescaling, z0.dtype
        )
        z_t = q_sample(z0, signal, noise_var, torch.randn_like(z0))
        z0_prev = None
        if self.cfg.self_cond and self.training and torch.rand(()) < 0.5:
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

    def logits(self, z: Tensor) -> Tensor:
        """Rounding logits ẑ · Eᵀ."""
        return self.embed.logits(z)


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
}


def apply_architecture(overrides: Dict[str, Any], args: Any) -> None:
    """Fill unset arguments: command line > architecture > dataclass default."""
    for f in fields(DiffusionTransformerConfig):
        if getattr(args, f.name, None) is None:
            setattr(args, f.name, overrides.get(f.name, f.default))


for _name, _overrides in ARCHITECTURES.items():
    register_model_architecture("diffusion_transformer", _name)(
        partial(apply_architecture, _overrides)
    )

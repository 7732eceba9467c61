"""What every embedding-diffusion denoiser of the plugin shares: the diffusion and width flags,
their checks, the tied latent embedding, the (rescaled) noise schedule, architecture defaults and
the dictionary check of checkpoints.  Subclasses add the network and ``encode`` / ``denoise`` /
``predict_lengths`` / ``forward``, the interface :class:`~diffusion_plugin.generator.DiffusionGenerator`
and the ``diffusion_loss`` criterion use.
"""

import argparse
import logging
import zlib
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Type

import torch
from torch import Tensor

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import BaseFairseqModel

from ..diffusion.samplers import q_sample
from ..diffusion.schedules import SCHEDULES, NoiseSchedule, alphas_cumprod
from .modules import LatentEmbedding

logger = logging.getLogger(__name__)


@dataclass
class DiffusionConfig(FairseqDataclass):
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


def transformer_layer_args(cfg: Any) -> Dict[str, Any]:
    """Keyword arguments of torch's pre-norm, batch-first transformer layers."""
    return dict(
        d_model=cfg.model_dim,
        nhead=cfg.attention_heads,
        dim_feedforward=cfg.ffn_dim,
        dropout=cfg.dropout,
        activation=str(cfg.activation_fn),
        batch_first=True,
        norm_first=True,
    )


def fill_config(config_class: Type[FairseqDataclass], overrides: Dict[str, Any], args: Any) -> None:
    """Fill unset arguments: command line > architecture > dataclass default."""
    for f in fields(config_class):
        if getattr(args, f.name, None) is None:
            setattr(args, f.name, overrides.get(f.name, f.default))


class DiffusionModel(BaseFairseqModel):
    """Base of the denoisers ẑ_0 = f(z_t, x, t): latent embedding E (``embed``), noise schedule
    (``schedule``, ``rescaling_factor``), rounding logits ẑ·Eᵀ and the forward draw
    z_t = sqrt(ᾱ'_t) z_0 + sqrt(β̄'_t) ε.

    ``length_from_padding`` (class attribute): the target length is not predicted but read from
    the first generated padding token, so padding is an ordinary, trained symbol of E.
    """

    config_class: Type[DiffusionConfig] = DiffusionConfig
    length_from_padding: bool = False

    def __init__(self, cfg: Any, src_dict: Any, tgt_dict: Any) -> None:
        super().__init__()
        check_config(cfg)
        self.cfg = cfg
        self.pad = tgt_dict.pad()
        self.eos = tgt_dict.eos()
        self.src_pad = src_dict.pad()
        self.embed = LatentEmbedding(
            len(tgt_dict), cfg.latent_dim, self.pad, cfg.embed_norm, self.length_from_padding
        )
        self.schedule = NoiseSchedule(str(cfg.noise_schedule), cfg.diffusion_steps)
        self.rescaling_factor = resolve_rescaling_factor(cfg, len(tgt_dict))
        fingerprint = [dictionary_fingerprint(src_dict), dictionary_fingerprint(tgt_dict)]
        self.register_buffer("dictionary_fingerprint", torch.tensor(fingerprint))

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """Dataclass flags without defaults, so architectures can set them; each boolean
        technique gets ``--X/--no-X`` so an architecture's choice can be ablated."""
        for f in fields(cls.config_class):
            if f.type is bool:
                parser.add_argument(
                    "--" + f.name.replace("_", "-"),
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=f.metadata.get("help"),
                )
        gen_parser_from_dataclass(parser, cls.config_class(), delete_default=True)

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

    def diffusion_targets(self, tgt_tokens: Tensor) -> Tensor:
        """The diffused sequence: the target without its EOS (lengths count real tokens)."""
        return tgt_tokens.masked_fill(tgt_tokens.eq(self.eos), self.pad)

    def noised(self, z0: Tensor, timesteps: Tensor) -> Tensor:
        """A training draw z_t ~ q(z_t | z_0) = N(sqrt(ᾱ'_t) z_0, β̄'_t I) (rescaled schedule)."""
        signal, noise_var = self.schedule.coefficients(
            timesteps, z0.size(1), self.rescaling_factor, self.cfg.vp_rescaling, z0.dtype
        )
        return q_sample(z0, signal, noise_var, torch.randn_like(z0))

    def logits(self, z: Tensor) -> Tensor:
        """Rounding logits ẑ · Eᵀ."""
        return self.embed.logits(z)

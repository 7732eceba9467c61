"""What every embedding-diffusion denoiser of the plugin shares: the diffusion and width flags,
their checks, the tied latent embedding, the (rescaled) noise schedule, architecture defaults and
the dictionary check of checkpoints.  Subclasses add the network and ``encode`` / ``denoise`` /
``predict_lengths`` / ``forward`` (and ``length_log_probs`` with a length predictor), the interface :class:`~diffusion_plugin.generator.DiffusionGenerator`
and the ``diffusion_loss`` criterion use.
"""

import argparse
import logging
import math
import zlib
from dataclasses import dataclass, field, fields, make_dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Dict, Optional, Type, Union

import torch
from torch import Tensor

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import BaseFairseqModel, register_model_architecture

from ..diffusion.adaptive_schedule import AdaptiveNoiseSchedule
from ..diffusion.samplers import q_sample
from ..diffusion.schedules import MAX_SENSIBLE_FACTOR, SCHEDULES, NoiseSchedule, alphas_cumprod
from ..diffusion.timestep_samplers import TIMESTEP_SAMPLERS, LossSecondMomentSampler, UniformSampler
from .modules import InferenceCached, LatentEmbedding, LearnedPositions, SinusoidalPositions

if TYPE_CHECKING:
    from ..diffusion.degeneration import RescalingResult

logger = logging.getLogger(__name__)


@dataclass
class DiffusionConfig(FairseqDataclass):
    model_dim: int = field(default=512, metadata={"help": "transformer width d_model"})
    ffn_dim: int = field(default=2048, metadata={"help": "feed-forward width"})
    attention_heads: int = field(default=8, metadata={"help": "attention heads"})
    dropout: float = field(default=0.1, metadata={"help": "dropout"})
    attention_dropout: float = field(
        default=-1.0,
        metadata={"help": "dropout on the attention weights; -1: --dropout (what torch's layers do)"},
    )
    activation_fn: ChoiceEnum(["relu", "gelu"]) = field(  # type: ignore[valid-type]
        default="relu", metadata={"help": "activation in feed-forward layers"}
    )
    latent_dim: int = field(default=128, metadata={"help": "embedding (diffusion) width d"})
    embed_norm: bool = field(
        default=False, metadata={"help": "layer-norm the embeddings (Difformer), σ_e ≈ 1"}
    )
    embed_norm_affine: bool = field(
        default=False,
        metadata={"help": "--embed-norm with a learnt scale and shift γ ⊙ LN(e) + β (torch's "
                  "affine layer norm); σ_e may drift from the 1 the degeneration score assumes"},
    )
    diffusion_steps: int = field(default=2000, metadata={"help": "diffusion steps T"})
    noise_schedule: ChoiceEnum(SCHEDULES) = field(  # type: ignore[valid-type]
        default="sqrt", metadata={"help": "named noise schedule"}
    )
    rescaling_factor: str = field(
        default="auto",
        metadata={
            "help": "Difformer noise rescaling factor F (training noise F²β̄), or 'auto' (the "
            "default): the smallest F on a 0.5 grid whose degeneration score is <= --dgs-max for "
            "this vocabulary size, latent width, schedule and T (computed once at model build and "
            "stored in the checkpoint); 1 trains without rescaling.  With --adaptive-schedule F "
            "is folded into the table (Eq. 8, so decoding uses the training noise) and 'auto' "
            "re-derives it for every refit table"
        },
    )
    dgs_max: float = field(
        default=0.15, metadata={"help": "degeneration-score threshold for --rescaling-factor auto"}
    )
    vp_rescaling: bool = field(
        default=False, metadata={"help": "variance-preserving rescaling (Difformer Eq. 8)"}
    )
    adaptive_schedule: bool = field(
        default=False,
        metadata={
            "help": "SeqDiffuSeq adaptive token-level schedule: a per-position ᾱ[t, i] table "
            "initialised from --noise-schedule, refit from the recorded losses (saved in checkpoints)"
        },
    )
    adaptive_update_interval: int = field(
        default=20000, metadata={"help": "refit the adaptive schedule every U updates"}
    )
    adaptive_bucket_size: int = field(
        default=20, metadata={"help": "timesteps per loss bucket K of the adaptive schedule"}
    )
    adaptive_warmup_updates: int = field(
        default=0,
        metadata={
            "help": "record losses only from this update on; refits at W + U, W + 2U, ..."
        },
    )
    adaptive_positions: int = field(
        default=64,
        metadata={"help": "target positions P with their own schedule; later ones share the last"},
    )
    adaptive_min_observations: int = field(
        default=1,
        metadata={"help": "(bucket, position) cells with fewer token losses are left out of a refit"},
    )
    post_norm: bool = field(
        default=False,
        metadata={"help": "post-norm transformer layers LN(x + f(x)) and no final layer norm "
                  "(fairseq's and Difformer's default) instead of pre-norm x + f(LN(x))"},
    )
    learned_positions: bool = field(
        default=False,
        metadata={"help": "learned position embeddings, N(0, 0.02) (Difformer) instead of sinusoidal"},
    )
    bert_init: bool = field(
        default=False,
        metadata={"help": "BERT initialisation of the network (Difformer): every linear map and "
                  "position embedding N(0, 0.02), biases 0; the latent table E stays N(0, 1)"},
    )
    timestep_sampler: ChoiceEnum(TIMESTEP_SAMPLERS) = field(  # type: ignore[valid-type]
        default="uniform",
        metadata={
            "help": "training timesteps: uniform, or importance sampling p_t ∝ sqrt(E[L_t²]) over "
            "the last 10 losses per t (DiffuSeq Eq. 9; saved in checkpoints)"
        },
    )


# fairseq transformer flags a user types by habit -> the plugin's flag
FAIRSEQ_TRANSFORMER_FLAGS = {
    f"{side}-{theirs}": ours
    for side in ("encoder", "decoder")
    for theirs, ours in (("embed-dim", "model-dim"), ("ffn-embed-dim", "ffn-dim"),
                         ("attention-heads", "attention-heads"), ("layers", "layers"))
}


def pointing_to(ours: str) -> Type[argparse.Action]:
    """An argparse action refusing a fairseq transformer flag with the plugin's flag to use."""

    class PointTo(argparse.Action):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, nargs="?", **kwargs)

        def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
            shared = "" if ours == "layers" else " (encoder and decoder share it)"
            parser.error(f"{option_string} is fairseq's transformer flag: the plugin's is --{ours}{shared}")

    return PointTo


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
        if not math.isfinite(factor) or factor < 0:
            raise ValueError(
                f"--rescaling-factor must be a finite number >= 0 or 'auto', got {cfg.rescaling_factor}"
            )
        if factor > MAX_SENSIBLE_FACTOR:
            logger.warning(
                "--rescaling-factor %g: training noise %g times the schedule's; Difformer's "
                "factors are 1-5 ('auto' finds one for this vocabulary)", factor, factor,
            )
    elif not 0.0 < cfg.dgs_max < 1.0:
        raise ValueError(f"--dgs-max must be in (0, 1), got {cfg.dgs_max}")
    if getattr(cfg, "embed_norm_affine", False) and not cfg.embed_norm:
        raise ValueError("--embed-norm-affine needs --embed-norm (it scales the normalised embeddings)")
    if not (cfg.attention_dropout == -1 or 0.0 <= cfg.attention_dropout < 1.0):
        raise ValueError(f"--attention-dropout must be in [0, 1) or -1 (= --dropout), got {cfg.attention_dropout}")
    if cfg.model_dim % cfg.attention_heads:
        raise ValueError(
            f"--model-dim {cfg.model_dim} must be divisible by --attention-heads {cfg.attention_heads}"
        )


def search_factor(cfg: Any, table: Any, vocab_size: int) -> "RescalingResult":
    """Difformer Algorithm 1 on an ᾱ table: F = 1, 1.5, … until DGS <= --dgs-max (Eq. 8 when
    the rescaling is variance preserving or folded into an adaptive table, else Eq. 3)."""
    from ..diffusion.degeneration import search_rescaling_factor

    return search_rescaling_factor(
        table,
        cfg.dgs_max,
        vocab_size=vocab_size,
        dim=cfg.latent_dim,
        variance_preserving=cfg.vp_rescaling or bool(getattr(cfg, "adaptive_schedule", False)),
    )


def resolve_rescaling_factor(cfg: Any, vocab_size: int) -> float:
    """F from the flag; for 'auto', :func:`search_factor` on the named schedule, written back into
    ``cfg`` so the checkpoint stores the number and generation never searches."""
    if str(cfg.rescaling_factor) != "auto":
        return float(cfg.rescaling_factor)
    result = search_factor(cfg, alphas_cumprod(str(cfg.noise_schedule), cfg.diffusion_steps), vocab_size)
    logger.info(
        "--rescaling-factor auto: F = %g (DGS %.4f <= %g; V=%d, d=%d, %s schedule, T=%d)",
        result.factor, result.dgs, cfg.dgs_max, vocab_size, cfg.latent_dim,
        cfg.noise_schedule, cfg.diffusion_steps,
    )
    cfg.rescaling_factor = f"{result.factor:g}"
    return result.factor


def build_schedule(cfg: Any) -> NoiseSchedule:
    """The named schedule, or with --adaptive-schedule a per-position table initialised from it
    (flags missing from older checkpoints' configs mean off)."""
    name, steps = str(cfg.noise_schedule), cfg.diffusion_steps
    if not getattr(cfg, "adaptive_schedule", False):
        return NoiseSchedule(name, steps)
    return AdaptiveNoiseSchedule(
        name,
        steps,
        positions=cfg.adaptive_positions,
        bucket_size=cfg.adaptive_bucket_size,
        update_interval=cfg.adaptive_update_interval,
        warmup_updates=cfg.adaptive_warmup_updates,
        min_observations=cfg.adaptive_min_observations,
    )


def build_timestep_sampler(cfg: Any) -> Union[UniformSampler, LossSecondMomentSampler]:
    name = str(getattr(cfg, "timestep_sampler", "uniform"))
    if name not in TIMESTEP_SAMPLERS:
        raise ValueError(
            f"unknown --timestep-sampler {name!r}; choose one of {', '.join(TIMESTEP_SAMPLERS)}"
        )
    if name == "loss-second-moment":
        return LossSecondMomentSampler(cfg.diffusion_steps)
    return UniformSampler(cfg.diffusion_steps)


def dictionary_fingerprint(dictionary: Any) -> int:
    """CRC32 of the symbol list: identifies the dictionary a checkpoint was trained with."""
    return zlib.crc32("\n".join(dictionary.symbols).encode("utf-8"))


def attention_padding_mask(padding_mask: Tensor) -> Tensor:
    """Padding mask safe for attention: a fully padded row attends to all its positions
    (its outputs are ignored by the loss) instead of producing NaN."""
    return padding_mask & ~padding_mask.all(dim=1, keepdim=True)


def transformer_layer_args(cfg: Any) -> Dict[str, Any]:
    """Keyword arguments of torch's batch-first transformer layers (pre-norm unless --post-norm)."""
    return dict(
        d_model=cfg.model_dim,
        nhead=cfg.attention_heads,
        dim_feedforward=cfg.ffn_dim,
        dropout=cfg.dropout,
        activation=str(cfg.activation_fn),
        batch_first=True,
        norm_first=not getattr(cfg, "post_norm", False),
    )


def final_norm(cfg: Any) -> Optional[torch.nn.LayerNorm]:
    """The layer norm after a pre-norm stack; none after post-norm layers (their output is
    normalised already, as in fairseq's post-norm transformer)."""
    return None if getattr(cfg, "post_norm", False) else torch.nn.LayerNorm(cfg.model_dim)


def build_positions(cfg: Any, max_positions: int) -> Union[SinusoidalPositions, LearnedPositions]:
    """Sinusoidal position vectors, or with --learned-positions a learned table."""
    if getattr(cfg, "learned_positions", False):
        return LearnedPositions(max_positions, cfg.model_dim)
    return SinusoidalPositions(cfg.model_dim)


def apply_bert_init(model: torch.nn.Module) -> None:
    """--bert-init: N(0, 0.02) weights and zero biases for every linear map (attention
    projections included) and learned position table; the latent embedding E keeps N(0, 1)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, torch.nn.MultiheadAttention):
            torch.nn.init.normal_(module.in_proj_weight, std=0.02)
            torch.nn.init.zeros_(module.in_proj_bias)
        elif isinstance(module, LearnedPositions):
            torch.nn.init.normal_(module.weight, std=0.02)


def apply_attention_dropout(model: torch.nn.Module, rate: float) -> None:
    """--attention-dropout on the weights of every attention of ``model`` (torch's transformer
    layers build them with --dropout; a negative rate leaves that)."""
    if rate < 0:
        return
    for module in model.modules():
        if isinstance(module, torch.nn.MultiheadAttention):
            module.dropout = rate


def fill_config(config_class: Type[FairseqDataclass], overrides: Dict[str, Any], args: Any) -> None:
    """Fill unset arguments: command line > architecture > dataclass default."""
    for f in fields(config_class):
        if getattr(args, f.name, None) is None:
            setattr(args, f.name, overrides.get(f.name, f.default))


def architecture_config(config_class: Type[FairseqDataclass], name: str, overrides: Dict[str, Any]) -> Type[FairseqDataclass]:
    """``config_class`` with the architecture's values as its defaults."""
    unknown = set(overrides) - {f.name for f in fields(config_class)}
    if unknown:
        raise ValueError(f"architecture {name} sets unknown fields {sorted(unknown)}")
    changed = [
        (f.name, f.type, field(default=overrides[f.name], metadata=f.metadata))
        for f in fields(config_class)
        if f.name in overrides
    ]
    title = "".join(part.title() for part in name.split("_")) + "Config"
    return make_dataclass(title, changed, bases=(config_class,))


def register_architectures(
    model_name: str, config_class: Type[FairseqDataclass], table: Dict[str, Dict[str, Any]]
) -> None:
    """Register each architecture of ``table`` for both of fairseq's configuration paths.

    ``--arch NAME`` (argparse): the architecture function fills the flags the command line left
    unset (command line > architecture > dataclass default).  ``model._name: NAME``
    (fairseq-hydra-train, or a checkpoint's config): hydra fills every field from the model's
    dataclass before an architecture function could run, so each architecture also gets its own
    dataclass, whose defaults are the architecture's, registered under its name (the config
    store's ``model`` group and the dataclass registry, with the architecture mapped to it)."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY, MODEL_DATACLASS_REGISTRY
    from hydra.core.config_store import ConfigStore

    for name, overrides in table.items():
        register_model_architecture(model_name, name)(partial(fill_config, config_class, overrides))
        dataclass_ = architecture_config(config_class, name, overrides)
        MODEL_DATACLASS_REGISTRY[name] = dataclass_
        ARCH_MODEL_NAME_REGISTRY[name] = name
        node = dataclass_()
        node._name = name
        ConfigStore.instance().store(name=name, group="model", node=node, provider="diffusion_plugin")


class DiffusionModel(BaseFairseqModel, InferenceCached):
    """Base of the denoisers ẑ_0 = f(z_t, x, t): latent embedding E (``embed``), noise schedule
    (``schedule``, ``rescaling_factor``), rounding logits ẑ·Eᵀ, the forward draw
    z_t = sqrt(ᾱ'_t) z_0 + sqrt(β̄'_t) ε, and the network's linear maps as decoding applies
    them (``decoding_weights``).

    ``length_from_padding`` (class attribute): the target length is not predicted but read from
    the first generated padding token, so padding is an ordinary, trained symbol of E.
    """

    config_class: Type[DiffusionConfig] = DiffusionConfig
    length_from_padding: bool = False
    ends: int = 0  # diffused BOS / EOS around the target (one each, or none)
    recording: bool = True  # record_losses keeps the training statistics

    def __init__(self, cfg: Any, src_dict: Any, tgt_dict: Any) -> None:
        super().__init__()
        check_config(cfg)
        self.cfg = cfg
        self.pad = tgt_dict.pad()
        self.eos = tgt_dict.eos()
        self.src_pad = src_dict.pad()
        self.embed = LatentEmbedding(
            len(tgt_dict), cfg.latent_dim, self.pad, cfg.embed_norm, self.length_from_padding,
            affine=bool(getattr(cfg, "embed_norm_affine", False)),
        )
        self.schedule = build_schedule(cfg)
        self.timestep_sampler = build_timestep_sampler(cfg)
        self.vocab_size = len(tgt_dict)
        self.rederive_rescaling = str(cfg.rescaling_factor) == "auto"  # after every refit
        self.rescaling_factor = resolve_rescaling_factor(cfg, self.vocab_size)
        if isinstance(self.schedule, AdaptiveNoiseSchedule):  # the table is the training noise
            self.schedule.fold(self.rescaling_factor)
            self.rescaling_factor = 1.0
        fingerprint = [dictionary_fingerprint(src_dict), dictionary_fingerprint(tgt_dict)]
        self.register_buffer("dictionary_fingerprint", torch.tensor(fingerprint))

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, checkpoint_file: str = "model.pt", *args: Any, **kwargs: Any) -> Any:
        """fairseq's hub interface, refusing a checkpoint that holds another kind of model (an
        AR transformer's hub would silently ignore the diffusion decoding arguments)."""
        hub = super().from_pretrained(model_name_or_path, checkpoint_file, *args, **kwargs)
        model = hub.models[0]
        if not isinstance(model, cls):
            raise TypeError(
                f"{checkpoint_file} holds a {type(model).__name__} ({hub.cfg.task._name} task), "
                f"not a {cls.__name__}: load it with its own class's from_pretrained"
            )
        return hub

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
        names = {f.name for f in fields(cls.config_class)}
        for theirs, ours in FAIRSEQ_TRANSFORMER_FLAGS.items():
            if theirs.replace("-", "_") not in names:
                parser.add_argument("--" + theirs, action=pointing_to(ours), help=argparse.SUPPRESS)

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        """Refuse checkpoints trained with other dictionaries before shapes get compared; match
        the checkpoint's schedule and sampler state to this model's flags."""
        stored = state_dict.get("dictionary_fingerprint")
        if stored is not None and not torch.equal(stored.cpu(), self.dictionary_fingerprint.cpu()):
            raise ValueError(
                "checkpoint dictionary does not match the data: the checkpoint was trained with "
                f"dictionaries of fingerprint {stored.tolist()}, the data directory has "
                f"{self.dictionary_fingerprint.tolist()} (source, target); use the data-bin "
                "(dict.*.txt) the model was trained on"
            )
        state_dict = self.training_state_for(state_dict)
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)

    def training_state_for(self, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Defined behaviour when the checkpoint's schedule / sampler state differs from the flags:

        * adaptive table stored, --adaptive-schedule off: refused (the weights were trained
          with that table);
        * no table stored, --adaptive-schedule on: the table starts from the fixed schedule the
          checkpoint was trained with, with empty statistics (logged);
        * an adaptive table from before the rescaling was folded into it (no
          ``schedule.rescaling_factor``): its noise was the table's with F = 1 at decoding, which
          is what this version does only when F = 1; otherwise refused;
        * sampler history stored but not used: dropped; expected but absent: starts empty (logged).
        """
        own = self.state_dict()
        schedule_keys = {k for k in own if k.startswith("schedule.")}
        stored_schedule = {k for k in state_dict if k.startswith("schedule.")}
        if stored_schedule and not schedule_keys:
            raise ValueError(
                "the checkpoint has an adaptive noise schedule (SeqDiffuSeq): pass "
                "--adaptive-schedule to continue training it (its table is part of the model)"
            )
        if stored_schedule and "schedule.rescaling_factor" not in stored_schedule:
            if float(own["schedule.rescaling_factor"]) != 1.0:
                raise ValueError(
                    "the checkpoint's adaptive schedule was trained with the noise rescaling "
                    "applied outside its table (plugin versions before 2026-12-07), which this "
                    "version folds into the table: retrain it (or decode it as before with "
                    "--model-overrides \"{'rescaling_factor': '1'}\")"
                )
            state_dict = {**state_dict, "schedule.rescaling_factor": own["schedule.rescaling_factor"]}
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("timestep_sampler.")
                      or k in own}
        missing = sorted(k for k in own if k not in state_dict
                         and k.startswith(("schedule.", "timestep_sampler.")))
        if missing:
            logger.warning(
                "the checkpoint has no %s state (trained without it): starting it afresh%s",
                " / ".join(sorted({k.split(".")[0] for k in missing})),
                f" from the fixed {self.cfg.noise_schedule} schedule (F = "
                f"{float(own['schedule.rescaling_factor']):g} folded in) with empty loss statistics"
                if schedule_keys & set(missing) else "",
            )
            state_dict = {**state_dict, **{k: own[k] for k in missing}}
        return state_dict

    def prepare_for_inference_(self, cfg: Any) -> None:
        """fairseq-generate / fairseq-interactive / the hub interface call this before decoding:
        with ``--bf16`` the network runs in bfloat16 (on CPUs with AVX512-BF16 or AMX, and on
        GPUs); the generator keeps the reverse chain z_τ in float32 and the schedule in float64.
        (fairseq's own ``--bf16`` handling only serves TPUs.)"""
        super().prepare_for_inference_(cfg)
        common = getattr(cfg, "common", None)
        if getattr(common, "bf16", False):
            if getattr(common, "fp16", False):
                raise ValueError("--bf16 and --fp16 exclude each other: choose one precision")
            self.to(torch.bfloat16)

    def record_losses(self, timesteps: Tensor, token_losses: Tensor, mask: Tensor, losses: Tensor) -> None:
        """Training statistics: per-token denoising losses [B, L] for the adaptive schedule and
        per-sequence losses [B] for the importance sampler; nothing while ``recording`` is off
        (fairseq's dummy batches: a replayed batch with ignore_grad on a worker that ran out)."""
        if not self.recording:
            return
        if isinstance(self.schedule, AdaptiveNoiseSchedule):
            self.schedule.record(timesteps, token_losses, mask)
        if isinstance(self.timestep_sampler, LossSecondMomentSampler):
            self.timestep_sampler.record(timesteps, losses)

    def end_update(self, num_updates: int) -> None:
        """After an optimizer step on every worker: merge the workers' statistics, refit if due."""
        if isinstance(self.schedule, AdaptiveNoiseSchedule):
            if self.schedule.end_update(num_updates) is not None and self.rederive_rescaling:
                self.rederive_rescaling_factor()
        if isinstance(self.timestep_sampler, LossSecondMomentSampler):
            self.timestep_sampler.end_update()

    def rederive_rescaling_factor(self) -> None:
        """--rescaling-factor auto with the adaptive schedule: a refit table is loss-linear in t,
        which puts more timesteps at high SNR, where a model can score by rounding z_t alone
        (Difformer's degeneration); fold in the smallest F that brings its DGS back to --dgs-max."""
        table = self.schedule.alpha_bar_table
        result = search_factor(self.cfg, table, self.vocab_size)
        before = result.evaluations[1.0]
        if result.factor > 1.0:
            self.schedule.fold(result.factor)
        logger.info(
            "adaptive schedule: refit table DGS %.4f; F = %g folded in (DGS %.4f <= %g)",
            before, result.factor, result.dgs, self.cfg.dgs_max,
        )

    def diffusion_targets(self, tgt_tokens: Tensor) -> Tensor:
        """The diffused sequence: the target without its EOS (lengths count real tokens)."""
        return tgt_tokens.masked_fill(tgt_tokens.eq(self.eos), self.pad)

    def noised(self, z0: Tensor, timesteps: Tensor) -> Tensor:
        """A training draw z_t ~ q(z_t | z_0) = N(sqrt(ᾱ'_t) z_0, β̄'_t I) (rescaled schedule)."""
        signal, noise_var = self.schedule.coefficients(
            timesteps, z0.size(1), self.rescaling_factor, self.cfg.vp_rescaling, z0.dtype
        )
        return q_sample(z0, signal, noise_var, torch.randn_like(z0))

    def decoding_state(self, encoder_out: Dict[str, Tensor], per_source: int) -> Dict[str, Tensor]:
        """``encoder_out`` as ``denoise`` reads it for ``per_source`` consecutive candidate rows per
        source, built once per batch before the reverse process (here: each source repeated)."""
        return {k: v.repeat_interleave(per_source, dim=0) for k, v in encoder_out.items()}

    def decoding_weights(self) -> Any:
        """The subclass's ``pack_weights``: while decoding (eval, no grad) packed for oneDNN on a
        CPU once and kept while the parameters stay the same; otherwise built afresh, unpacked."""
        return self.cached(lambda: self.pack_weights(pack=self.decoding))

    def pack_weights(self, pack: bool) -> Any:
        raise NotImplementedError

    def logits(self, z: Tensor) -> Tensor:
        """Rounding logits ẑ · Eᵀ."""
        return self.embed.logits(z)

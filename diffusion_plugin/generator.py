"""Iterative diffusion decoding for fairseq-generate / fairseq-interactive / --eval-bleu.

The encoder runs once per batch; the length predictor proposes b1 lengths, each decoded from b2
noise draws, all b1·b2 candidates of all sources in one batch; K reverse steps (a
``diffusion.reverse_chain.ReverseChain`` of the chosen sampler) run the decoder only; the last
ẑ_0 is rounded to tokens; candidates are ranked per source.  Models without a length predictor (``length_from_padding``: DiffuSeq) decode
every candidate at its maximum length; the hypothesis ends at the first generated padding token.
"""

import logging
import math
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from .diffusion.noise import SentenceNoise
from .diffusion.reverse_chain import ReverseChain
from .diffusion.samplers import SAMPLERS, SPACINGS, check_decoding_steps, spaced_timesteps
from .diffusion.schedules import MAX_SENSIBLE_FACTOR
from .diffusion.selection import mbr_utilities

logger = logging.getLogger(__name__)

LOG2_E, LN_2 = 1.0 / math.log(2.0), math.log(2.0)
SELECTIONS = ("score", "bleu-mbr", "reranker")
ROUNDING_CHUNK = {"cpu": 1 << 20, "cuda": 1 << 28}  # logits per rounding chunk, by device type
# feed-forward activations (token rows x --ffn-dim) decoded at once, by device type (none: all)
SLICE_ACTIVATIONS = {"cpu": 1 << 19}


@dataclass
class DecodingConfig(FairseqDataclass):
    decoding_steps: int = field(default=20, metadata={"help": "reverse steps K (of T)"})
    decoding_sampler: ChoiceEnum(tuple(SAMPLERS)) = field(  # type: ignore[valid-type]
        default="ddpm",
        metadata={"help": "ddpm: respaced posterior sampling; ddim: DDIM; dpm-solver++: "
                  "multistep DPM-Solver++ (data prediction, deterministic) for few steps"},
    )
    ddim_eta: float = field(default=0.0, metadata={"help": "DDIM η in [0, 1]; 0 = deterministic"})
    dpm_solver_order: int = field(
        default=2, metadata={"help": "order of --decoding-sampler dpm-solver++ (1 = DDIM η = 0)"}
    )
    decoding_timesteps: ChoiceEnum(SPACINGS) = field(  # type: ignore[valid-type]
        default="uniform",
        metadata={"help": "where the K steps fall: uniform in t, quadratic in t (denser at low "
                  "noise), or uniform in log-SNR of the decoding schedule (every sampler)"},
    )
    early_stopping_steps: int = field(
        default=0, metadata={"help": "stop the K-step chain E steps early and round the last ẑ_0"}
    )
    decoding_rescaling_factor: float = field(
        default=1.0, metadata={"help": "noise rescaling factor used while sampling"}
    )
    length_beam: int = field(default=1, metadata={"help": "b1: length candidates per source"})
    noise_beam: int = field(default=1, metadata={"help": "b2: noise draws per length"})
    candidate_selection: ChoiceEnum(SELECTIONS) = field(  # type: ignore[valid-type]
        default="score",
        metadata={
            "help": "score: mean token log-prob; bleu-mbr: MBR with sentence BLEU; reranker: "
            "length-normalised log-likelihood under the AR model given as --path diff.pt:ar.pt"
        },
    )
    length_score_weight: float = field(
        default=1.0,
        metadata={
            "help": "λ: with --length-beam > 1 a candidate's score (printed, and ranked by "
            "--candidate-selection score) is its mean token log-prob + λ·log p(n|x) of the length "
            "predictor, and bleu-mbr weighs each candidate as evidence by p(n|x)^λ; 0 ignores the "
            "length probabilities"
        },
    )
    clamping: Optional[bool] = field(
        default=None,
        metadata={
            "help": "replace ẑ_0 by its nearest token embedding each step; default (neither "
            "--clamping nor --no-clamping): on for a checkpoint trained with --adaptive-schedule, "
            "off otherwise"
        },
    )
    prior_sampling_prob: float = field(
        default=0.0, metadata={"help": "p1: probability of a prior-sampling step (SeqDiffuSeq E)"}
    )
    prior_sampling_until: float = field(
        default=0.0, metadata={"help": "p2: prior sampling only in the first p2 fraction of steps"}
    )
    target_length: int = field(
        default=0, metadata={"help": "decode every source at this length (0: predicted)"}
    )


DECODING_FIELDS = tuple(f.name for f in fields(DecodingConfig) if not f.name.startswith("_"))


def check_types(cfg: Dict[str, Any]) -> None:
    """Each decoding flag of the type its field declares (hub keyword arguments arrive
    unchecked: "2", 2.5 or nan for a count): an int (not a bool) for an int field, a number for
    a float field, a bool for a bool field."""
    for f in fields(DecodingConfig):
        value, kind = cfg.get(f.name), f.type
        if kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif kind is bool:
            ok = isinstance(value, bool)
        elif kind == Optional[bool]:
            ok = value is None or isinstance(value, bool)
        else:  # a choice, checked by check_decoding
            ok = True
        if not ok:
            raise ValueError(f"--{f.name.replace('_', '-')} must be {type_name(kind)}, got {value!r}")


def type_name(kind: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false",
            Optional[bool]: "true, false or None (the model's default)"}[kind]


def clamps_by_default(model: Any) -> bool:
    """--clamping's default: on for a model trained with SeqDiffuSeq's adaptive schedule, whose
    unclamped multi-step chains feed back an off-manifold ẑ_0; off for a fixed schedule, where
    clamping commits to the early steps' argmax tokens (``bench/results/*-multi30k-clamping.md``)."""
    return bool(getattr(model.cfg, "adaptive_schedule", False))


def check_decoding(cfg: Dict[str, Any], diffusion_steps: int) -> None:
    """Clear errors for impossible decoding flags."""
    check_types(cfg)
    steps = cfg["decoding_steps"]
    check_decoding_steps(diffusion_steps, steps)
    if not 0 <= cfg["early_stopping_steps"] < steps:
        raise ValueError(
            f"--early-stopping-steps must be in [0, --decoding-steps={steps}), "
            f"got {cfg['early_stopping_steps']}"
        )
    for name in ("length_beam", "noise_beam"):
        if cfg[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {cfg[name]}")
    if cfg["decoding_timesteps"] not in SPACINGS:
        raise ValueError(f"--decoding-timesteps must be one of {SPACINGS}, got {cfg['decoding_timesteps']!r}")
    if cfg["decoding_sampler"] not in SAMPLERS:
        raise ValueError(f"--decoding-sampler must be one of {tuple(SAMPLERS)}, got {cfg['decoding_sampler']!r}")
    if cfg["candidate_selection"] not in SELECTIONS:
        raise ValueError(
            f"--candidate-selection must be one of {SELECTIONS}, got {cfg['candidate_selection']!r}"
        )
    if not 0.0 <= cfg["length_score_weight"] < math.inf:
        raise ValueError(f"--length-score-weight must be a finite number >= 0, got {cfg['length_score_weight']}")
    if not 0.0 <= cfg["ddim_eta"] <= 1.0:
        raise ValueError(f"--ddim-eta must be in [0, 1], got {cfg['ddim_eta']}")
    if cfg["dpm_solver_order"] not in (1, 2, 3):
        raise ValueError(f"--dpm-solver-order must be 1, 2 or 3, got {cfg['dpm_solver_order']}")
    factor = cfg["decoding_rescaling_factor"]
    if not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"--decoding-rescaling-factor must be a finite number > 0, got {factor}")
    if factor > MAX_SENSIBLE_FACTOR:
        logger.warning(
            "--decoding-rescaling-factor %g: the chain's noise is %g times the schedule's; "
            "Difformer decodes with F = 1 and trains with F <= %g",
            factor, factor, MAX_SENSIBLE_FACTOR,
        )
    for name in ("prior_sampling_prob", "prior_sampling_until"):
        if not 0.0 <= cfg[name] <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {cfg[name]}")
    if cfg["target_length"] < 0:
        raise ValueError(f"--target-length must be >= 0, got {cfg['target_length']}")
    SAMPLERS[cfg["decoding_sampler"]].check(cfg)


def max_last(x: Tensor, block: int = 512) -> Tuple[Tensor, Tensor]:
    """(max, argmax) over the last dimension of [..., V] through block maxima: the maximum of each
    block of ``block`` entries (amax, vectorised), the first block holding the row maximum, then
    the argmax within it. Same result as ``x.max(dim=-1)`` (first index on ties); on a CPU
    torch's max with indices does not vectorise and costs several times amax."""
    *leading, size = x.shape
    blocks = size // block
    if blocks < 2:
        return x.max(dim=-1)
    x = x.reshape(-1, size)
    rows = x.size(0)
    head = x[:, : blocks * block].reshape(rows, blocks, block)
    first = head.amax(dim=-1).argmax(dim=-1)
    values, offsets = head[torch.arange(rows, device=x.device), first].max(dim=-1)
    indices = first * block + offsets
    if blocks * block < size:
        tail_values, tail_offsets = x[:, blocks * block :].max(dim=-1)
        later = tail_values > values
        values = torch.where(later, tail_values, values)
        indices = torch.where(later, tail_offsets + blocks * block, indices)
    return values.view(leading), indices.view(leading)


class DiffusionGenerator:
    """Decodes a :class:`DiffusionTransformerModel`; returns all candidates, best first.

    Every draw of a sentence's chain comes from a generator seeded by (torch's seed at
    ``generate``, i.e. fairseq's ``--seed``; the sentence's id): ``noise_source``."""

    noise_source = SentenceNoise

    def __init__(
        self,
        models: List[Any],
        tgt_dict: Any,
        retain_history: bool = False,
        max_len_a: float = 0.0,
        max_len_b: int = 200,
        min_len: int = 1,
        match_source_len: bool = False,
        **decoding: Any,
    ):
        """``max_len_a`` / ``max_len_b`` / ``min_len`` (fairseq's flags) bound the predicted
        lengths to [min_len, a·|x| + b] (|x|: source tokens with EOS); ``match_source_len``
        decodes every source at its own length (without EOS)."""
        model = models[0]
        if not hasattr(model, "denoise"):
            raise TypeError(
                f"--path holds a {type(model).__name__}, not a diffusion model: the "
                "diffusion_translation task decodes checkpoints trained with --arch "
                "diffusion_transformer_* / difformer_* (train one with fairseq-train --user-dir "
                "diffusion_plugin --task diffusion_translation)"
            )
        self.cfg = {name: decoding[name] for name in DECODING_FIELDS}
        for name in ("decoding_sampler", "decoding_timesteps", "candidate_selection"):
            self.cfg[name] = str(self.cfg[name])
        check_decoding(self.cfg, model.cfg.diffusion_steps)
        if self.cfg["clamping"] is None:
            self.cfg["clamping"] = clamps_by_default(model)
        if model.length_from_padding and self.cfg["length_beam"] > 1:
            raise ValueError(
                f"--length-beam {self.cfg['length_beam']}: {type(model).__name__} has no length "
                "predictor (outputs end at the first generated padding token); draw several "
                "candidates with --noise-beam"
            )
        classes = getattr(getattr(model, "length_head", None), "out_features", None)
        if classes is not None and not self.cfg["target_length"] and self.cfg["length_beam"] > classes:
            raise ValueError(
                f"--length-beam {self.cfg['length_beam']} exceeds the length predictor's {classes} "
                f"classes (target − source length offsets): use at most {classes}"
            )
        if self.cfg["target_length"] + 2 * model.ends > model.cfg.max_target_positions:
            raise ValueError(
                f"--target-length {self.cfg['target_length']} exceeds the model's "
                f"--max-target-positions {model.cfg.max_target_positions}"
                + (" less its diffused BOS and EOS" if model.ends else "")
            )
        if match_source_len and self.cfg["target_length"]:
            raise ValueError("--match-source-len and --target-length both fix the lengths: give one")
        self.max_len_a, self.max_len_b, self.min_len = max_len_a, max_len_b, min_len
        self.match_source_len = match_source_len
        self.model = model
        self.reranker = self.check_reranker(models, tgt_dict)
        self.retain_history = retain_history
        self.pad, self.eos, self.bos = tgt_dict.pad(), tgt_dict.eos(), tgt_dict.bos()
        self.symbols_to_strip_from_output = {self.eos}
        # read once: omegaconf attribute access costs ~50 µs per read
        self.latent_dim, self.vp_rescaling = model.cfg.latent_dim, model.cfg.vp_rescaling
        # the schedule's table as it is now (an adaptive table refit later is not re-read)
        self.timesteps = spaced_timesteps(
            model.schedule.alpha_bar_table, self.cfg["decoding_steps"], self.cfg["decoding_timesteps"],
            self.cfg["decoding_rescaling_factor"], self.vp_rescaling,
        )
        self.ffn_dim = model.cfg.ffn_dim

    def check_reranker(self, models: List[Any], tgt_dict: Any) -> Optional[Any]:
        """The AR model of ``--path diff.pt:ar.pt`` for ``--candidate-selection reranker``."""
        if self.cfg["candidate_selection"] != "reranker":
            if len(models) > 1:
                raise ValueError(
                    f"--path holds {len(models)} checkpoints: ensembles of denoisers are not "
                    "supported; a second checkpoint is an AR reranker, for --candidate-selection "
                    "reranker --path diffusion.pt:transformer.pt"
                )
            return None
        if len(models) != 2 or not hasattr(models[1], "get_normalized_probs") or hasattr(models[1], "denoise"):
            raise ValueError(
                "--candidate-selection reranker needs an autoregressive fairseq model as the second "
                "checkpoint: --path diffusion.pt:transformer.pt"
            )
        reranker = models[1]
        sizes = (reranker.encoder.embed_tokens.num_embeddings, reranker.decoder.output_projection.out_features)
        expected = (self.model.src_embed.weight.size(0), len(tgt_dict))
        if sizes != expected:
            raise ValueError(
                f"the reranker's dictionaries (source {sizes[0]}, target {sizes[1]} symbols) differ "
                f"from the diffusion model's (source {expected[0]}, target {expected[1]}): train the "
                "AR model on the same data-bin"
            )
        return reranker

    def reranker_scores(self, src_tokens: Tensor, hyp_tokens: Tensor) -> Tensor:
        """Length-normalised log p_AR(y | x) of each candidate ([N, L] tokens ending in EOS)."""
        per_source = self.candidates_per_source
        src = src_tokens.repeat_interleave(per_source, dim=0)
        src_lengths = src.ne(self.model.src_pad).sum(dim=1)
        prev = torch.cat([hyp_tokens.new_full((hyp_tokens.size(0), 1), self.eos), hyp_tokens[:, :-1]], dim=1)
        out = self.reranker(src, src_lengths, prev)
        lprobs = self.reranker.get_normalized_probs(out, log_probs=True).float()
        token_lprobs = lprobs.gather(-1, hyp_tokens.unsqueeze(-1)).squeeze(-1)
        mask = hyp_tokens.ne(self.pad)
        return (token_lprobs * mask).sum(dim=1) / mask.sum(dim=1)

    @property
    def candidates_per_source(self) -> int:
        return self.cfg["length_beam"] * self.cfg["noise_beam"]

    def candidate_lengths(self, encoder_out: Dict[str, Tensor]) -> Tensor:
        """[B · b1 · b2] target lengths: b1 predicted (or the fixed --target-length), b2 copies each."""
        padding_mask = encoder_out["padding_mask"]
        batch, beam = padding_mask.size(0), self.cfg["length_beam"]
        source = (~padding_mask).sum(dim=1, keepdim=True)  # with EOS
        if self.cfg["target_length"]:
            lengths = padding_mask.new_full((batch, beam), self.cfg["target_length"], dtype=torch.long)
        elif self.match_source_len:
            lengths = (source - 1).clamp(min=1).expand(batch, beam)
        else:
            lengths = self.model.predict_lengths(encoder_out, beam)
            longest = (self.max_len_a * source).floor().long() + self.max_len_b
            lengths = torch.minimum(lengths, longest).clamp(min=self.min_len)
        return lengths.repeat_interleave(self.cfg["noise_beam"], dim=1).reshape(-1)

    def length_scores(self, encoder_out: Dict[str, Tensor], lengths: Tensor) -> Tensor:
        """λ·log p(n|x) of each of the [B · b1 · b2] candidates' ``lengths``; zero where every
        candidate of a source has the same length (b1 = 1, --target-length, a length read from
        the source) or λ = 0, as it cannot change a ranking there."""
        weight, beam = self.cfg["length_score_weight"], self.cfg["length_beam"]
        if weight == 0 or beam == 1 or self.cfg["target_length"] or self.match_source_len:
            return torch.zeros(lengths.shape, device=lengths.device)
        per_source = lengths.view(-1, self.candidates_per_source)
        return weight * self.model.length_log_probs(encoder_out, per_source).reshape(-1)

    def round(self, z0_hat: Tensor, padding_mask: Tensor) -> Tuple[Tensor, Tensor]:
        """Tokens argmax(ẑ_0·Eᵀ) over real symbols (and padding, for models whose outputs end at
        it) and their log-probabilities (``round_rows``, without the full log-softmax) at the
        positions outside ``padding_mask`` (padding there, score 0), computed over row chunks of
        at most ROUNDING_CHUNK logits (cache-sized on a CPU, where the passes over one [N·L, V]
        tensor would cost as much as the product). Without padding (a source decoded alone at
        b = 1) the rows are neither gathered nor scattered back."""
        padded = bool(padding_mask.any())
        keep = ~padding_mask
        rows = z0_hat[keep] if padded else z0_hat.reshape(-1, z0_hat.size(-1))
        budget = ROUNDING_CHUNK.get(rows.device.type, ROUNDING_CHUNK["cuda"])
        chunk = max(1, budget // self.model.embed.weight.size(0))
        kept_tokens, kept_scores = zip(*(self.round_rows(part) for part in rows.split(chunk)))
        if not padded:
            return torch.cat(kept_tokens).view(padding_mask.shape), torch.cat(kept_scores).view(padding_mask.shape)
        tokens = padding_mask.new_full(padding_mask.shape, self.pad, dtype=torch.long)
        scores = z0_hat.new_zeros(padding_mask.shape, dtype=torch.float)
        tokens[keep], scores[keep] = torch.cat(kept_tokens), torch.cat(kept_scores)
        return tokens, scores

    def round_rows(self, z0_hat: Tensor) -> Tuple[Tensor, Tensor]:
        """argmax_v ℓ_v and log p = −log Σ_v exp(ℓ_v − max ℓ) of the logits ℓ (``max_last``; the
        sum as 2^((ℓ − max ℓ)·log2 e), in place on the float32 logits: torch's exp is slower
        than exp2 on a CPU)."""
        logits = self.model.logits(z0_hat).float()  # a new tensor (the product, or its copy)
        blocked = [self.eos, self.bos] if self.model.length_from_padding else [self.pad, self.eos, self.bos]
        logits[..., blocked] = float("-inf")
        best, tokens = max_last(logits)
        shifted = logits.sub_(best.unsqueeze(-1))  # <= 0
        return tokens, shifted.mul_(LOG2_E).exp2_().sum(dim=-1).log2_().mul_(-LN_2)

    def with_ends(self, tokens: Tensor, span: Tensor) -> Tensor:
        """``tokens`` [N, L] with BOS at the first and EOS at the last of each row's ``span``
        diffused positions (--diffuse-bos-eos: what the model was trained to reproduce there)."""
        tokens[:, 0] = self.bos
        tokens[torch.arange(tokens.size(0), device=tokens.device), span - 1] = self.eos
        return tokens

    def output_lengths(self, tokens: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """Hypothesis lengths and whether each was cut at its maximum: the decoded lengths, or for
        ``length_from_padding`` models the position of the first generated padding token (a
        candidate that emits none within its ``lengths`` positions is cut there, flagged True)."""
        if not self.model.length_from_padding:
            return lengths, torch.zeros_like(lengths, dtype=torch.bool)
        positions = torch.arange(tokens.size(1), device=tokens.device)
        is_pad = tokens.eq(self.pad) & (positions < lengths.unsqueeze(1))
        first = torch.where(is_pad, positions, lengths.unsqueeze(1)).min(dim=1).values
        return first, ~is_pad.any(dim=1)

    def slices(self, src_tokens: Tensor) -> List[Tuple[int, int, Tensor]]:
        """The batch cut into runs of consecutive sources whose b candidates hold at most
        SLICE_ACTIVATIONS[device] / --ffn-dim token rows (b · sources · longest source; a source
        alone may exceed it), each as (first, end, its sources without their all-padding
        columns). On a CPU the activations of a large batch of candidates leave the caches, and
        decoding it slice by slice is faster (bench/results/2026-12-01-cpu-speed-packed.md); a
        GPU decodes the batch at once."""
        activations = SLICE_ACTIVATIONS.get(src_tokens.device.type)
        whole = [(0, src_tokens.size(0), src_tokens)]
        if activations is None:
            return whole
        budget = max(1, activations // self.ffn_dim)
        if src_tokens.numel() * self.candidates_per_source <= budget:  # the batch fits
            return whole
        real = src_tokens.ne(self.model.src_pad)
        rows = self.candidates_per_source * real.sum(dim=1).clamp(min=1)
        slices, start, longest = [], 0, 0
        for i, r in enumerate(rows.tolist()):
            longest = max(longest, r)
            if i > start and longest * (i + 1 - start) > budget:
                slices.append((start, i))
                start, longest = i, r
        slices.append((start, len(rows)))
        return [(a, b, src_tokens[a:b][:, real[a:b].any(dim=0)]) for a, b in slices]

    @torch.no_grad()
    def generate(self, models: List[Any], sample: Dict[str, Any], **unused: Any) -> List[List[Dict[str, Any]]]:
        src_tokens = sample["net_input"]["src_tokens"]
        ids = sample.get("id")
        ids = list(range(src_tokens.size(0))) if ids is None else [int(i) for i in ids]
        seed = torch.initial_seed()
        return [
            hyps
            for first, end, src in self.slices(src_tokens)
            for hyps in self.decode(src, ids[first:end], seed)
        ]

    def decode(self, src_tokens: Tensor, ids: List[int], seed: int) -> List[List[Dict[str, Any]]]:
        """All candidates of every source of ``src_tokens`` (sentence ``ids``), decoded as one
        batch, best first, their draws seeded by (``seed``, id)."""
        model, cfg = self.model, self.cfg
        encoder_out = model.encode(src_tokens)
        lengths = self.candidate_lengths(encoder_out)
        length_scores = self.length_scores(encoder_out, lengths)
        per_source = self.candidates_per_source
        encoder_out = model.decoding_state(encoder_out, per_source)
        span = lengths + 2 * model.ends  # diffused positions: the tokens and BOS / EOS around them
        n, length = lengths.numel(), int(span.max())
        padding_mask = torch.arange(length, device=lengths.device).unsqueeze(0) >= span.unsqueeze(1)
        # the chain z_τ in at least float32, whatever the network's precision (--fp16, --bf16)
        dtype = torch.promote_types(next(model.parameters()).dtype, torch.float32)
        noise_source = self.noise_source(seed, ids, per_source, span.cpu(), self.latent_dim)
        timesteps = self.timesteps.to(src_tokens.device)
        chain = ReverseChain.from_schedule(
            model.schedule, timesteps, length, cfg["decoding_rescaling_factor"], self.vp_rescaling,
            cfg, noise_source, dtype,
        )
        z = chain.initial(padding_mask, dtype)

        steps = cfg["decoding_steps"] - cfg["early_stopping_steps"]
        z0_hat: Optional[Tensor] = None
        history: List[Tensor] = []
        for k in range(steps):
            t = timesteps[k : k + 1]  # one timestep, broadcast over the batch
            z0_hat = model.denoise(z, t, encoder_out, padding_mask, z0_hat)
            if cfg["clamping"] or self.retain_history or k + 1 == steps:
                # the hypothesis is the rounding of the model's last ẑ_0, not of its clamped copy
                tokens, scores = self.round(z0_hat, padding_mask)
                if model.ends:
                    tokens = self.with_ends(tokens, span)
                if self.retain_history:
                    history.append(tokens)
                if cfg["clamping"]:
                    z0_hat = model.embed(tokens)
            if k + 1 < steps:
                z = chain.step(z, z0_hat, k, padding_mask)
        if model.ends:  # the hypothesis: the positions between BOS and EOS
            tokens, scores, history = tokens[:, 1:], scores[:, 1:], [h[:, 1:] for h in history]
        trails = [(h, self.output_lengths(h, lengths)[0]) for h in history]
        lengths, cut = self.output_lengths(tokens, lengths)
        if cut.any():
            logger.warning(
                "%d of %d candidates emitted no padding token: cut at their maximum length "
                "(marked cut_at_max_length; raise --max-positions / --max-target-positions)",
                int(cut.sum()), n,
            )
        reranker_scores = None
        if self.reranker is not None:
            beyond = torch.arange(tokens.size(1), device=lengths.device) >= lengths.unsqueeze(1)
            hyp = tokens.masked_fill(beyond, self.pad)
            hyp = torch.cat([hyp, hyp.new_full((n, 1), self.pad)], dim=1)
            hyp[torch.arange(n), lengths] = self.eos
            reranker_scores = self.reranker_scores(src_tokens, hyp).cpu()
        return self.finalize(src_tokens, tokens, scores, lengths, cut, trails, steps, length_scores, reranker_scores)

    def finalize(
        self,
        src_tokens: Tensor,
        tokens: Tensor,
        scores: Tensor,
        lengths: Tensor,
        cut: Tensor,
        trails: List[Tuple[Tensor, Tensor]],
        steps: int,
        length_scores: Tensor,
        reranker_scores: Optional[Tensor] = None,
    ) -> List[List[Dict[str, Any]]]:
        """Per source: its candidates as fairseq hypothesis dicts, best first (``trails``: the
        tokens and lengths of every retained step; ``length_scores``: λ·log p(n|x) of each)."""
        per_source = self.candidates_per_source
        tokens, scores, lengths, cut = tokens.cpu(), scores.cpu(), lengths.cpu(), cut.cpu()
        length_scores = length_scores.cpu()
        trails = [(h.cpu(), h_lengths.cpu()) for h, h_lengths in trails]
        empty_source = (src_tokens.ne(self.pad) & src_tokens.ne(self.eos)).sum(dim=1).eq(0).cpu()
        eos = torch.tensor([self.eos])
        results = []
        for b in range(src_tokens.size(0)):
            if empty_source[b]:
                results.append([self.hypothesis(eos, torch.zeros(1), [], steps)])
                continue
            candidates = []
            for c in range(b * per_source, (b + 1) * per_source):
                n = int(lengths[c])
                hyp_tokens = torch.cat([tokens[c, :n], eos])
                positional = torch.cat([scores[c, :n], torch.zeros(1)])
                trail = [torch.cat([h[c, : h_lengths[c]], eos]) for h, h_lengths in trails]
                candidates.append(
                    self.hypothesis(hyp_tokens, positional, trail, steps, bool(cut[c]), float(length_scores[c]))
                )
                if reranker_scores is not None:
                    candidates[-1]["reranker_score"] = float(reranker_scores[c])
            results.append(self.rank(candidates))
        return results

    def hypothesis(
        self, tokens: Tensor, positional: Tensor, trail: List[Tensor], steps: int, cut: bool = False,
        length_score: float = 0.0,
    ) -> Dict[str, Any]:
        """A fairseq hypothesis dict; its score, printed and ranked by, is the mean token log-prob
        + ``length_score`` (λ·log p(n|x))."""
        real = max(tokens.numel() - 1, 1)
        return {
            "tokens": tokens,
            "score": (float(positional[:-1].sum() / real) if tokens.numel() > 1 else 0.0) + length_score,
            "length_score": length_score,
            "positional_scores": positional,
            "alignment": None,
            "steps": steps,
            "history": [{"tokens": t, "alignment": None} for t in trail],
            "cut_at_max_length": cut,
        }

    def rank(self, candidates: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Best first: by expected BLEU against the candidates weighted by exp(length_score) =
        p(n|x)^λ (bleu-mbr), by the AR reranker's score, or by score (with length_score)."""
        if self.cfg["candidate_selection"] == "bleu-mbr":
            top = max(c["length_score"] for c in candidates)
            weights = [math.exp(c["length_score"] - top) for c in candidates]  # ∝ p(n|x)^λ
            utilities = mbr_utilities([c["tokens"][:-1].tolist() for c in candidates], weights)
            order = sorted(range(len(candidates)), key=lambda i: -utilities[i])
        elif self.reranker is not None:
            order = sorted(range(len(candidates)), key=lambda i: -candidates[i]["reranker_score"])
        else:
            order = sorted(range(len(candidates)), key=lambda i: -candidates[i]["score"])
        return [candidates[i] for i in order]

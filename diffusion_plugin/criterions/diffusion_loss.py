"""Training objective of embedding diffusion (Difformer Eq. 2, SeqDiffuSeq §4.1).

L = mean_tokens ‖ẑ_0 − z_0‖²/d  +  CE(ẑ_0·Eᵀ, y) (anchor; or CE(z_0·Eᵀ, y) with --rounding-loss)
    + λ_len · NLL(length offset; skipped for models without length predictor)
    [+ mean_tokens ‖sqrt(ᾱ_T) z_0‖²/d with --prior-loss]
Every term is a mean (sample_size = 1, as fairseq's NAT criteria) and is logged by name.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List

import torch
import torch.nn.functional as F

from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import FairseqDataclass


LOGGED_TERMS = ("loss", "mse", "anchor", "rounding", "nll_loss", "length", "prior")


@dataclass
class DiffusionLossConfig(FairseqDataclass):
    label_smoothing: float = field(
        default=0.0, metadata={"help": "label smoothing of the token cross-entropy"}
    )
    length_loss_factor: float = field(
        default=0.1, metadata={"help": "weight of the length-predictor NLL"}
    )
    rounding_loss: bool = field(
        default=False,
        metadata={"help": "token CE on z_0 (DiffusionLM rounding) instead of ẑ_0 (anchor loss)"},
    )
    prior_loss: bool = field(
        default=False, metadata={"help": "add ‖sqrt(ᾱ_T) z_0‖² (DiffusionLM/SeqDiffuSeq prior term)"}
    )


@register_criterion("diffusion_loss", dataclass=DiffusionLossConfig)
class DiffusionLoss(FairseqCriterion):
    def __init__(self, cfg: DiffusionLossConfig, task: Any) -> None:
        super().__init__(task)
        self.cfg = cfg

    def forward(self, model, sample: Dict[str, Any], reduce: bool = True):
        net_input = sample["net_input"]
        batch_size = net_input["src_tokens"].size(0)
        timesteps, weights = model.timestep_sampler.sample(batch_size, net_input["src_tokens"].device)
        out = model(
            net_input["src_tokens"], net_input["src_lengths"], sample["target"], timesteps
        )
        mask = out["mask"]
        ntokens = mask.sum().clamp(min=1)
        # importance weights 1/(T p_t) of the sampled timesteps, zero on padding
        token_weights = weights.unsqueeze(1) * mask
        z0, z0_hat = out["z0"], out["z0_hat"]

        token_mse = (z0_hat - z0).pow(2).mean(-1)
        terms = {"mse": (token_mse * token_weights).sum() / ntokens}
        token_name = "rounding" if self.cfg.rounding_loss else "anchor"
        logits = model.logits(z0 if self.cfg.rounding_loss else z0_hat)
        lprobs = F.log_softmax(logits.float(), dim=-1)[mask]
        smoothed, nll = label_smoothed_nll_loss(
            lprobs, out["target"][mask], self.cfg.label_smoothing, reduce=False
        )
        terms[token_name] = (smoothed * token_weights[mask]).sum() / ntokens
        if model.training:
            # unweighted per-sequence loss (denoising + token CE) for the importance sampler
            token_loss = token_mse.detach().float().masked_fill(~mask, 0.0)
            token_loss[mask] += smoothed.detach().view(-1).float()
            sequence_loss = token_loss.sum(1) / mask.sum(1).clamp(min=1)
            model.record_losses(timesteps, token_mse.detach(), mask, sequence_loss)
        nll_loss = nll.sum() / ntokens
        if "length_logits" in out:  # models that take the length from generated padding have none
            terms["length"] = F.cross_entropy(out["length_logits"].float(), out["length_target"])
        if self.cfg.prior_loss:
            t_max = torch.full_like(timesteps, model.cfg.diffusion_steps)
            signal_T, _ = model.schedule.coefficients(t_max, z0.size(1), dtype=z0.dtype)
            terms["prior"] = ((signal_T * z0.pow(2)).mean(-1) * mask).sum() / ntokens

        loss = sum(
            value * (self.cfg.length_loss_factor if name == "length" else 1.0)
            for name, value in terms.items()
        )
        logging_output = {
            "loss": loss.detach(),
            "nll_loss": nll_loss.detach(),
            "ntokens": sample["ntokens"],
            "nsentences": batch_size,
            "sample_size": 1,
            **{name: value.detach() for name, value in terms.items()},
        }
        return loss, 1, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs: List[Dict[str, Any]]) -> None:
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        for name in LOGGED_TERMS:
            if any(name in log for log in logging_outputs):
                total = sum(float(log.get(name, 0)) for log in logging_outputs)
                metrics.log_scalar(name, total / max(sample_size, 1), sample_size, round=4)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True

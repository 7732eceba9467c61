"""``diffusion_translation``: fairseq's translation data pipeline + the diffusion generator."""

import argparse
import contextlib
from dataclasses import dataclass, field, fields
from typing import Any, List, Optional

import numpy as np
import torch
from omegaconf import OmegaConf, open_dict

from fairseq.logging import metrics
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from ..diffusion.noise import sentence_seed
from ..generation_flags import fairseq_generation_flags
from ..generator import DECODING_FIELDS, DecodingConfig, DiffusionGenerator


@dataclass
class DiffusionTranslationConfig(TranslationConfig, DecodingConfig):
    """Translation data flags plus the decoding flags of :class:`DecodingConfig`."""

    validation_seed: int = field(
        default=1,
        metadata={
            "help": "validation draws (timesteps, noise, --eval-bleu decoding) seeded per batch by "
            "(this seed, the batch's first sentence id), so every validation of every checkpoint "
            "sees the same draws; -1: torch's running RNG (a different draw each validation)"
        },
    )


@register_task("diffusion_translation", dataclass=DiffusionTranslationConfig)
class DiffusionTranslationTask(TranslationTask):
    """Translation with an embedding-diffusion model (fairseq-train/-generate/-interactive)."""

    cfg: DiffusionTranslationConfig

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """The dataclass flags, with ``--X/--no-X`` for each tri-state (Optional[bool]) decoding
        field such as ``--clamping`` (left unset, the generator takes the checkpoint's default)."""
        for f in fields(DecodingConfig):
            if f.type == Optional[bool]:
                parser.add_argument(
                    "--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                    default=None, help=f.metadata.get("help"),
                )
        super().add_args(parser)

    def get_batch_iterator(self, dataset: Any, **kwargs: Any) -> Any:
        """fairseq's batch_by_size silently drops the last batch when its size is not a multiple
        of --required-batch-size-multiple (8 by default): fairseq-generate and validation would
        lose sentences, so their batches ignore it; training batches (the train subset) keep it."""
        if dataset is not self.datasets.get(self.cfg.train_subset):
            kwargs["required_batch_size_multiple"] = 1
        return super().get_batch_iterator(dataset, **kwargs)

    def build_model(self, cfg: Any, from_checkpoint: bool = False) -> Any:
        """fairseq's model build; --rescaling-factor auto, resolved by the model, is written back
        into ``cfg``, the config fairseq saves in checkpoints (fairseq hands the model a merged
        copy of it), so generation reads the number and never searches."""
        model = super().build_model(cfg, from_checkpoint)
        resolved = getattr(getattr(model, "cfg", None), "rescaling_factor", None)
        if resolved is not None and str(getattr(cfg, "rescaling_factor", None)) == "auto":
            with open_dict(cfg) if OmegaConf.is_config(cfg) else contextlib.nullcontext():
                cfg.rescaling_factor = resolved
        return model

    def valid_step(self, sample: Any, model: Any, criterion: Any) -> Any:
        """fairseq's validation step on draws fixed by --validation-seed (torch's RNG state outside
        it is left as it was)."""
        if self.cfg.validation_seed < 0 or not sample or "id" not in sample:
            return super().valid_step(sample, model, criterion)
        cuda = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(sentence_seed(self.cfg.validation_seed, int(sample["id"].min())))
            return super().valid_step(sample, model, criterion)

    def reduce_metrics(self, logging_outputs: Any, criterion: Any) -> None:
        """fairseq's metrics, with the numpy values it logs (--eval-bleu's n-gram counts) held as
        tensors: checkpoints store the meters, and a numpy array there needs numpy's unpickler,
        which torch.load(weights_only=True) refuses in any tool that does not allow-list it."""
        super().reduce_metrics(logging_outputs, criterion)
        for aggregator in metrics.get_active_aggregators():
            for meter in aggregator.values():
                for name in ("val", "sum"):
                    value = getattr(meter, name, None)
                    if isinstance(value, (np.ndarray, np.generic)):
                        setattr(meter, name, torch.from_numpy(np.asarray(value)))

    def train_step(self, sample: Any, model: Any, criterion: Any, optimizer: Any, update_num: int,
                   ignore_grad: bool = False) -> Any:
        """fairseq's step; a dummy batch (``ignore_grad``: fairseq replays a batch on a worker
        with none left, so that every worker joins the gradient sync) records no loss statistics
        for the adaptive schedule or the importance sampler."""
        inner = model
        while hasattr(inner, "module"):  # fairseq's distributed wrappers
            inner = inner.module
        inner.recording = not ignore_grad
        try:
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        finally:
            inner.recording = True

    def optimizer_step(self, optimizer: Any, model: Any, update_num: int) -> None:
        """The step, then the model's end-of-update hook (every worker, same update): merge the
        adaptive-schedule and timestep-sampler statistics and refit the schedule when due."""
        super().optimizer_step(optimizer, model, update_num)
        model.end_update(update_num + 1)

    def build_generator(self, models: List[Any], args: Any, **unused: Any) -> DiffusionGenerator:
        """Decoding flags come from the task config; attributes of ``args`` (generation config,
        ``--eval-bleu-args`` JSON, hub ``translate(**kwargs)``) override them; fairseq's own
        generation flags there get their NAT meaning or are refused (``generation_flags``)."""
        decoding = {name: getattr(args, name, None) for name in DECODING_FIELDS}
        decoding = {
            name: getattr(self.cfg, name) if value is None else value
            for name, value in decoding.items()
        }
        return DiffusionGenerator(
            models,
            self.target_dictionary,
            retain_history=bool(getattr(args, "retain_iter_history", False)),
            **fairseq_generation_flags(args, decoding),
        )

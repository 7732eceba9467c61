"""``diffusion_translation``: fairseq's translation data pipeline + the diffusion generator."""

from dataclasses import dataclass
from typing import Any, List

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from ..generator import DECODING_FIELDS, DecodingConfig, DiffusionGenerator


@dataclass
class DiffusionTranslationConfig(TranslationConfig, DecodingConfig):
    """Translation data flags plus the decoding flags of :class:`DecodingConfig`."""


@register_task("diffusion_translation", dataclass=DiffusionTranslationConfig)
class DiffusionTranslationTask(TranslationTask):
    """Translation with an embedding-diffusion model (fairseq-train/-generate/-interactive)."""

    cfg: DiffusionTranslationConfig

    def get_batch_iterator(self, dataset: Any, **kwargs: Any) -> Any:
        """fairseq's batch_by_size silently drops the last batch when its size is not a multiple
        of --required-batch-size-multiple (8 by default): fairseq-generate and validation would
        lose sentences.  Batches here are never dropped."""
        kwargs["required_batch_size_multiple"] = 1
        return super().get_batch_iterator(dataset, **kwargs)

    def optimizer_step(self, optimizer: Any, model: Any, update_num: int) -> None:
        """The step, then the model's end-of-update hook (every worker, same update): merge the
        adaptive-schedule and timestep-sampler statistics and refit the schedule when due."""
        super().optimizer_step(optimizer, model, update_num)
        model.end_update(update_num + 1)

    def build_generator(self, models: List[Any], args: Any, **unused: Any) -> DiffusionGenerator:
        """Decoding flags come from the task config; attributes of ``args`` (generation config,
        ``--eval-bleu-args`` JSON, hub ``translate(**kwargs)``) override them."""
        decoding = {name: getattr(args, name, None) for name in DECODING_FIELDS}
        decoding = {
            name: getattr(self.cfg, name) if value is None else value
            for name, value in decoding.items()
        }
        return DiffusionGenerator(
            models,
            self.target_dictionary,
            retain_history=bool(getattr(args, "retain_iter_history", False)),
            **decoding,
        )

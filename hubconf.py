"""torch.hub entry points of the plugin (fairseq's hub interface: translate, sample, generate).

    hub = torch.hub.load("path/to/this/checkout", "diffusion_transformer", source="local",
                         model_name_or_path="checkpoints/difformer",
                         checkpoint_file="checkpoint_best.pt", data_name_or_path="data-bin/de_en")
    hub.translate(["ein Satz ."], decoding_steps=20, length_beam=3, noise_beam=3)
"""
from typing import Any

dependencies = ["torch", "fairseq"]


def diffusion_transformer(model_name_or_path: str, checkpoint_file: str = "model.pt", **kwargs: Any) -> Any:
    """An encoder-decoder diffusion checkpoint (Difformer / SeqDiffuSeq) as a fairseq hub."""
    from diffusion_plugin.models.diffusion_transformer import DiffusionTransformerModel

    return DiffusionTransformerModel.from_pretrained(model_name_or_path, checkpoint_file, **kwargs)


def diffuseq(model_name_or_path: str, checkpoint_file: str = "model.pt", **kwargs: Any) -> Any:
    """An encoder-only DiffuSeq checkpoint as a fairseq hub."""
    from diffusion_plugin.models.diffuseq import DiffuSeqModel

    return DiffuSeqModel.from_pretrained(model_name_or_path, checkpoint_file, **kwargs)

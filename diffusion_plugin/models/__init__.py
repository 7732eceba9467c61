from .diffusion_transformer import DiffusionTransformerModel  # noqa: F401  (registers the model)
from .diffuseq import DiffuSeqModel  # noqa: F401  (registers the model)

from . import diffusion_loss  # noqa: F401  (registers the criterion)

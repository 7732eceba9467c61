from . import diffusion_translation  # noqa: F401  (registers the task)

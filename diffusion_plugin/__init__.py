"""fairseq plugin for diffusion sequence-to-sequence generation (``--user-dir diffusion_plugin``).

The diffusion math in :mod:`diffusion_plugin.diffusion` imports no fairseq; the fairseq
registrations (task, model, criterion, ``--bpe wordpiece``, safe checkpoint loading) load when
fairseq is installed.
"""
import importlib.util

if importlib.util.find_spec("fairseq") is not None:
    from . import checkpoints  # noqa: F401  (safe checkpoint loading under torch >= 2.6)
    from . import criterions, models, tasks, wordpiece_bpe  # noqa: F401  (fairseq registrations)

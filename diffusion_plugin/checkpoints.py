"""Checkpoint loading under torch >= 2.6 (``weights_only=True``) with clear errors.

fairseq 0.12 stores a few plain-Python objects besides tensors: legacy architectures keep their
``argparse.Namespace`` in ``cfg.model`` and ``--eval-bleu`` keeps numpy arrays in the metrics
state.  They are allow-listed here instead of disabling the safe loader.  Importing this module
also makes fairseq report an empty, truncated or non-checkpoint file by name, and makes a resume
whose ``checkpoint_last.pt`` is damaged fall back to the newest intact checkpoint.
"""
import argparse
import copy
import glob
import logging
import os
import zipfile
from typing import Any, Callable

import numpy as np
import torch
from fairseq import checkpoint_utils

logger = logging.getLogger(__name__)
_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
SAFE_GLOBALS = [
    argparse.Namespace,
    np.ndarray,
    np.dtype,
    _multiarray._reconstruct,
    _multiarray.scalar,
    *(type(np.dtype(name)) for name in ("float64", "float32", "int64", "int32", "bool")),
]


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read."""


# torch.save(..., _use_new_zipfile_serialization=False) starts with the pickled magic number
LEGACY_TORCH_HEADER = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def is_legacy_torch_file(path: str) -> bool:
    """A torch checkpoint in the pre-1.6 (non-zip) format, which torch.load still reads."""
    with open(path, "rb") as f:
        return f.read(len(LEGACY_TORCH_HEADER)) == LEGACY_TORCH_HEADER


def check_checkpoint_file(path: str) -> None:
    """Raise :class:`CheckpointError` for a missing, empty or truncated checkpoint file."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): the save was interrupted")
    if not zipfile.is_zipfile(path) and not is_legacy_torch_file(path):
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) is truncated or not a torch checkpoint; "
            "use an earlier checkpoint (e.g. checkpoint_best.pt) or retrain"
        )


def checked(load: Callable[..., Any]) -> Callable[..., Any]:
    def load_checkpoint_to_cpu(path: str, *args: Any, **kwargs: Any) -> Any:
        if not path.startswith(("http://", "https://")):
            check_checkpoint_file(path)
        return load(path, *args, **kwargs)

    load_checkpoint_to_cpu.__wrapped__ = load  # type: ignore[attr-defined]
    return load_checkpoint_to_cpu


def intact(path: str) -> bool:
    try:
        check_checkpoint_file(path)
    except CheckpointError:
        return False
    return True


def resumable(load: Callable[..., Any]) -> Callable[..., Any]:
    """fairseq's resume (``load_checkpoint``), falling back to the newest intact checkpoint of
    ``--save-dir`` when ``checkpoint_last.pt`` is damaged (a save cut short by a full disk or a
    kill): nothing trained before it is lost, and the log says which file was used."""

    def load_checkpoint(cfg: Any, trainer: Any, **kwargs: Any) -> Any:
        last = os.path.join(cfg.save_dir, f"checkpoint_last{trainer.checkpoint_suffix}.pt")
        if cfg.restore_file == "checkpoint_last.pt" and os.path.exists(last) and not intact(last):
            candidates = sorted(
                (p for p in glob.glob(os.path.join(cfg.save_dir, "checkpoint*.pt")) if p != last),
                key=os.path.getmtime,
                reverse=True,
            )
            fallback = next((p for p in candidates if intact(p)), None)
            if fallback is None:
                check_checkpoint_file(last)  # raises, naming the file
            logger.warning("%s is damaged (truncated save): resuming from %s, the newest intact "
                           "checkpoint in %s", last, fallback, cfg.save_dir)
            cfg = copy.deepcopy(cfg)
            cfg.restore_file = fallback
        return load(cfg, trainer, **kwargs)

    load_checkpoint.__wrapped__ = load  # type: ignore[attr-defined]
    return load_checkpoint


torch.serialization.add_safe_globals(SAFE_GLOBALS)
if not hasattr(checkpoint_utils.load_checkpoint_to_cpu, "__wrapped__"):
    checkpoint_utils.load_checkpoint_to_cpu = checked(checkpoint_utils.load_checkpoint_to_cpu)
if not hasattr(checkpoint_utils.load_checkpoint, "__wrapped__"):
    checkpoint_utils.load_checkpoint = resumable(checkpoint_utils.load_checkpoint)

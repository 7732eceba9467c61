"""Imported first by the scripts that use the plugin: when it is not installed (a script run from
a checkout), the checkout goes on ``sys.path`` so ``import diffusion_plugin`` finds it."""
import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("diffusion_plugin") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

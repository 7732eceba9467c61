"""The diffusion math package imports and runs without fairseq."""
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "diffusion_plugin" / "diffusion"

BLOCK_FAIRSEQ = """
import sys
sys.modules["fairseq"] = None  # as if fairseq were not installed
import importlib, pkgutil
import diffusion_plugin.diffusion as pkg
names = [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    importlib.import_module(name)
from diffusion_plugin.diffusion.schedules import alphas_cumprod
assert alphas_cumprod("sqrt", 10).shape == (11,)
assert sys.modules["fairseq"] is None
assert not any(m.startswith("fairseq.") for m in sys.modules)
print(len(names), "modules")
"""


def test_diffusion_package_has_no_fairseq_import():
    for source in PACKAGE.rglob("*.py"):
        assert "fairseq" not in source.read_text(encoding="utf-8").replace("no fairseq", ""), source
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_FAIRSEQ], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    modules = int(result.stdout.split()[0])
    assert modules == len(list(PACKAGE.rglob("*.py"))) - 1  # every module and subpackage, not the package

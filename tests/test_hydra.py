"""fairseq-hydra-train builds an architecture as --arch does (issue K.2), from the shipped YAML."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from conftest import PLUGIN_DIR, run_fairseq

REPO = Path(__file__).resolve().parents[1]
ARCH_FIELDS = ("encoder_layers", "decoder_layers", "model_dim", "ffn_dim", "attention_heads",
               "latent_dim", "embed_norm", "self_cond", "dropout", "rescaling_factor")


def model_cfg(path: Path) -> dict:
    return torch.load(path, weights_only=True)["cfg"]["model"]


def test_hydra_train_builds_the_named_architecture(data_bin, tmp_path):
    save = tmp_path / "hydra"
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train"),
         "--config-dir", str(REPO / "examples" / "hydra"), "--config-name", "diffusion_transformer_tiny",
         f"task.data={data_bin}", f"common.user_dir={PLUGIN_DIR}", "optimization.max_update=2",
         f"checkpoint.save_dir={save}", "dataset.num_workers=0", "+model.diffusion_steps=100",
         f"hydra.run.dir={tmp_path / 'outputs'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    hydra = model_cfg(save / "checkpoint_last.pt")
    # the same architecture through fairseq-train --arch
    argparse_dir = tmp_path / "argparse"
    run_fairseq("train", [
        str(data_bin), "--user-dir", PLUGIN_DIR, "--cpu", "--seed", "1", "--task", "diffusion_translation",
        "--arch", "diffusion_transformer_tiny", "--diffusion-steps", "100", "--share-all-embeddings",
        "--criterion", "diffusion_loss", "--optimizer", "adam", "--lr", "2e-3", "--max-tokens", "4000",
        "--max-update", "1", "--save-dir", str(argparse_dir), "--no-epoch-checkpoints",
        "--log-format", "none", "--num-workers", "0"])
    plain = model_cfg(argparse_dir / "checkpoint_last.pt")
    assert {k: hydra[k] for k in ARCH_FIELDS} == {k: plain[k] for k in ARCH_FIELDS}
    assert (hydra["model_dim"], hydra["encoder_layers"], hydra["embed_norm"], hydra["self_cond"]) == (128, 2, True, True)
    assert hydra["diffusion_steps"] == 100  # a YAML / command-line key overrides the architecture



def test_every_shipped_yaml_names_registered_components():
    """Each examples/hydra config names a registered task, criterion and architecture, and its
    model keys are fields of that architecture's dataclass (a typo would fail at training)."""
    import yaml
    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY
    from fairseq.models import MODEL_DATACLASS_REGISTRY
    from fairseq.tasks import TASK_DATACLASS_REGISTRY

    import diffusion_plugin  # noqa: F401  (registrations)

    configs = sorted((REPO / "examples" / "hydra").glob("*.yaml"))
    assert {c.stem for c in configs} >= {"diffusion_transformer_tiny", "difformer_iwslt_de_en",
                                         "seqdiffuseq_iwslt_de_en"}
    for path in configs:
        cfg = yaml.safe_load(path.read_text())
        assert cfg["task"]["_name"] in TASK_DATACLASS_REGISTRY, path
        criterion = CRITERION_DATACLASS_REGISTRY[cfg["criterion"]["_name"]]
        assert set(cfg["criterion"]) - {"_name"} <= set(criterion.__dataclass_fields__), path
        model = MODEL_DATACLASS_REGISTRY[cfg["model"]["_name"]]  # the architecture's own dataclass
        assert set(cfg["model"]) - {"_name"} <= set(model.__dataclass_fields__), path

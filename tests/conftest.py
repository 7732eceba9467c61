"""Shared fixtures: a tiny synthetic data-bin and a briefly trained checkpoint, built in-process."""
import contextlib
import io
from pathlib import Path
from typing import List

import pytest

PLUGIN_DIR = str(Path(__file__).resolve().parents[1] / "diffusion_plugin")

TINY_MODEL = [
    "--arch", "diffusion_transformer_tiny", "--encoder-layers", "1", "--decoder-layers", "1",
    "--model-dim", "32", "--ffn-dim", "64", "--attention-heads", "2", "--latent-dim", "16",
    "--diffusion-steps", "100",
]


def run_fairseq(command: str, args: List[str]) -> str:
    """Run fairseq-{train,generate,interactive,preprocess} in-process; return its stdout."""
    from fairseq import checkpoint_utils, options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import generate, interactive, preprocess, train

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if command == "preprocess":
            preprocess.main(options.get_preprocessing_parser().parse_args(args))
        else:
            parser = {
                "train": options.get_training_parser,
                "generate": options.get_generation_parser,
                "interactive": options.get_interactive_generation_parser,
            }[command]()
            main = {"train": train.main, "generate": generate.main, "interactive": interactive.main}
            parsed = options.parse_args_and_arch(parser, input_args=args)
            # fairseq keeps the best validation score in a function attribute: reset per run
            checkpoint_utils.save_checkpoint.__dict__.pop("best", None)
            main[command](convert_namespace_to_omegaconf(parsed))
    return out.getvalue()


def write_text_corpus(directory: Path, pairs, split: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{split}.src").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    (directory / f"{split}.tgt").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")


def preprocess_corpus(raw: Path, dest: Path) -> Path:
    run_fairseq(
        "preprocess",
        [
            "--source-lang", "src", "--target-lang", "tgt",
            "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"),
            "--testpref", str(raw / "test"), "--destdir", str(dest),
            "--joined-dictionary", "--workers", "1",
        ],
    )
    return dest


@pytest.fixture(scope="session")
def data_bin(tmp_path_factory) -> Path:
    from diffusion_plugin.synthetic import generate_pairs

    root = tmp_path_factory.mktemp("data")
    pairs = generate_pairs(360, seed=3)
    for split, chunk in [("train", pairs[:300]), ("valid", pairs[300:330]), ("test", pairs[330:])]:
        write_text_corpus(root / "raw", chunk, split)
    return preprocess_corpus(root / "raw", root / "bin")


def train_args(data: Path, save_dir: Path, *extra: str) -> List[str]:
    return [
        str(data), "--user-dir", PLUGIN_DIR, "--cpu", "--seed", "1",
        "--task", "diffusion_translation", *TINY_MODEL, "--share-all-embeddings",
        "--criterion", "diffusion_loss", "--label-smoothing", "0.1",
        "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "2000",
        "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--log-format", "none",
        "--num-workers", "0", *extra,
    ]


@pytest.fixture(scope="session")
def checkpoint(data_bin, tmp_path_factory) -> Path:
    save_dir = tmp_path_factory.mktemp("ckpt")
    run_fairseq("train", train_args(data_bin, save_dir, "--max-update", "30"))
    path = save_dir / "checkpoint_last.pt"
    assert path.exists()
    return path


def generate_args(data: Path, checkpoint: Path, *extra: str) -> List[str]:
    return [
        str(data), "--user-dir", PLUGIN_DIR, "--cpu", "--seed", "7",
        "--task", "diffusion_translation", "--path", str(checkpoint),
        "--gen-subset", "test", "--batch-size", "16", "--decoding-steps", "5",
        "--num-workers", "0", *extra,
    ]


@pytest.fixture(scope="session")
def transformer_checkpoint(data_bin, tmp_path_factory):
    """A fairseq AR transformer checkpoint (legacy architecture) trained for one update."""
    save_dir = tmp_path_factory.mktemp("ar")
    run_fairseq(
        "train",
        [
            str(data_bin), "--cpu", "--task", "translation", "--arch", "transformer",
            "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16",
            "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "16",
            "--decoder-ffn-embed-dim", "16", "--encoder-attention-heads", "2",
            "--decoder-attention-heads", "2", "--optimizer", "adam", "--lr", "1e-3",
            "--max-tokens", "2000", "--max-update", "1", "--save-dir", str(save_dir),
            "--no-epoch-checkpoints", "--log-format", "none", "--num-workers", "0",
        ],
    )
    return save_dir / "checkpoint_last.pt"

"""examples/{qqp,wiki_auto,quasar_t,conversation}/{train,generate}.sh on examples/recipe.sh: the
papers' flag sets for each MODEL, the refusals, and a tiny prepare + train + generate + score."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_prepare_seq2seq import prepare, release, vocab_file

REPO = Path(__file__).resolve().parents[1]


def recipe(model: str, dataset: str, call: str, data: str = "d", ngpu: str = "0"
           ) -> subprocess.CompletedProcess[str]:
    """Source the recipe with fairseq-train/-generate (and the python it runs) replaced by
    functions that print their arguments, one a line, then run ``call``."""
    script = (f"DATASET={dataset} SRC=src TGT=trg DATA={data} NGPU={ngpu} MODEL={model} "
              "SAVE_DIR=$(mktemp -d); source examples/recipe.sh; "
              "fairseq-train() { printf '%s\\n' \"$@\"; }; "
              "fairseq-generate() { printf '%s\\n' \"$@\" >&2; }; python() { :; }; " + call)
    return subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True)


def has(args: list[str], *pairs: str) -> bool:
    """Every "flag value" (or lone flag) of ``pairs`` appears in ``args`` in that order."""
    joined = "\n" + "\n".join(args) + "\n"
    return all("\n" + pair.replace(" ", "\n") + "\n" in joined for pair in pairs)


TRAIN_CASES = {
    # Difformer Table 21, QQP / Wiki-Auto / Quasar-T columns
    ("difformer", "qqp"): (["--arch difformer_base", "--max-update 50000", "--lr 5e-4",
                            "--warmup-updates 10000", "--dgs-max 0.15",
                            "--max-tokens 8192 --update-freq 1", "--share-all-embeddings",
                            "--label-smoothing 0.1", "--truncate-source",
                            "--skip-invalid-size-inputs-valid-test"], []),
    ("difformer", "wiki_auto"): (["--arch difformer_base", "--max-update 30000",
                                  "--max-tokens 8192 --update-freq 8"], []),
    ("difformer", "quasar_t"): (["--arch difformer_base", "--max-update 100000", "--lr 3e-4",
                                 "--warmup-updates 5000", "--dgs-max 0.20",
                                 "--max-tokens 8192 --update-freq 8"], []),
    # SeqDiffuSeq Table 6 (non-translation) and §5 / D.1
    ("seqdiffuseq", "conversation"): (["--arch seqdiffuseq_base", "--batch-size 128",
                                       "--lr 1e-4", "--warmup-updates 10000",
                                       "--max-source-positions 128 --max-target-positions 64",
                                       "--rounding-loss", "--prior-loss", "--truncate-source",
                                       "--share-all-embeddings"], ["--timestep-sampler"]),
    # DiffuSeq §4.1: encoder-only, 128 positions, importance-sampled timesteps
    ("diffuseq", "qqp"): (["--arch diffuseq_base", "--timestep-sampler loss-second-moment",
                           "--max-source-positions 64 --max-target-positions 64",
                           "--diffusion-steps 2000", "--noise-schedule sqrt", "--rounding-loss",
                           "--prior-loss", "--batch-size 128"], ["--share-all-embeddings"]),
    # translation keeps its settings (SeqDiffuSeq now with its 10K warm-up updates)
    ("difformer", "iwslt14"): (["--arch difformer_iwslt_de_en", "--max-update 300000"],
                               ["--truncate-source", "--skip-invalid-size-inputs-valid-test"]),
    ("seqdiffuseq", "iwslt14"): (["--arch seqdiffuseq_iwslt_de_en", "--warmup-updates 10000"],
                                 ["--truncate-source"]),
}


@pytest.mark.parametrize("model, dataset", sorted(TRAIN_CASES))
def test_training_flag_sets(model: str, dataset: str) -> None:
    result = recipe(model, dataset, "train --extra")
    assert result.returncode == 0, result.stderr
    args = result.stdout.splitlines()
    present, absent = TRAIN_CASES[model, dataset]
    assert args[0] == "d" and args[-1] == "--extra"  # the user's arguments come last and win
    assert has(args, *present), [p for p in present if not has(args, p)]
    assert not any(flag in args for flag in absent)


def test_generation_flag_sets(tmp_path: Path) -> None:
    wordpiece = tmp_path / "wp"
    wordpiece.mkdir()
    (wordpiece / "prepare_qqp.done").write_text("read: qqp | subwords: wordpiece vocab=v\n")
    difformer = recipe("difformer", "qqp", "generate --x", str(wordpiece)).stderr.splitlines()
    assert has(difformer, "--bpe wordpiece", "--decoding-steps 20", "--early-stopping-steps 5",
               "--length-beam 7", "--noise-beam 3", "--candidate-selection bleu-mbr",
               "--nbest 21", "--truncate-source")
    assert "--remove-bpe" not in difformer and difformer[-1] == "--x"
    diffuseq = recipe("diffuseq", "conversation", "generate").stderr.splitlines()
    assert has(diffuseq, "--remove-bpe", "--decoding-steps 2000", "--noise-beam 10",
               "--candidate-selection bleu-mbr", "--nbest 10",
               "--max-source-positions 64 --max-target-positions 64")
    translation = recipe("difformer", "iwslt14", "generate").stderr.splitlines()
    assert "--candidate-selection" not in translation and "--nbest" not in translation


@pytest.mark.parametrize("model, dataset, message", [
    ("difformer", "conversation", "Difformer (Table 21) has no Commonsense Conversation setting: "
     "use MODEL=diffuseq or MODEL=seqdiffuseq"),
    ("diffuseq", "iwslt14", "DiffuSeq reports no translation setting (its tasks: qqp, wiki_auto, "
     "quasar_t, conversation)"),
    ("bogus", "qqp", "MODEL must be difformer, seqdiffuseq or diffuseq, got 'bogus'"),
])
def test_recipe_refusals(model: str, dataset: str, message: str) -> None:
    result = recipe(model, dataset, "train")
    assert result.returncode == 1 and f"error: {message}" in result.stderr and not result.stdout


def test_tiny_prepare_train_generate_score(tmp_path: Path) -> None:
    """Tiny QQP-layout jsonl with a WordPiece vocabulary -> DiffuSeq (1 layer, width 32) for 150
    updates -> the recipe's averaging, MBR decoding over 10 draws (5 steps) and scoring."""
    out = tmp_path / "qqp"
    vocab, _ = vocab_file(tmp_path)
    prepared = prepare("--task", "qqp", "--raw-dir", release(tmp_path), "--out", out,
                       "--vocab", "bert", "--vocab-file", vocab, "--workers", "1")
    assert prepared.returncode == 0, prepared.stderr
    env = dict(os.environ, MODEL="diffuseq", NGPU="0", AVG="2", DATA=str(out),
               SAVE_DIR=str(tmp_path / "ckpt"), OMP_NUM_THREADS="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    tiny = ["--layers", "1", "--model-dim", "32", "--ffn-dim", "64", "--attention-heads", "2",
            "--latent-dim", "16", "--max-update", "150", "--batch-size", "4",
            "--save-interval-updates", "3", "--lr", "3e-3", "--warmup-updates", "1",
            "--num-workers", "0", "--no-epoch-checkpoints"]
    train = subprocess.run(["bash", str(REPO / "examples/qqp/train.sh"), *tiny], env=env,
                           capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    assert "num_updates 150" in train.stdout + train.stderr
    generate = subprocess.run(["bash", str(REPO / "examples/qqp/generate.sh"),
                               "--decoding-steps", "5", "--num-workers", "0"], env=env,
                              capture_output=True, text=True, timeout=300)
    assert generate.returncode == 0, generate.stdout[-2000:] + generate.stderr[-2000:]
    log = generate.stdout
    print(log)
    assert re.search(r"averaged 2 checkpoints \(checkpoint_\d+_1[45]\d\.pt, checkpoint_\d+_14\d\.pt\)", log)
    assert re.search(r"^Generate test with beam=5: BLEU4 = ", log, re.M)
    assert "sources 3, candidates per source 10..10 (3 sources in self-BLEU / div-4)" in log
    for row in ("BLEU (sacrebleu)", "BLEU (tokenised)", "sentence BLEU", "ROUGE-L F", "dist-1",
                "self-BLEU", "avg length"):
        assert re.search(rf"^{re.escape(row)}\s+(\d+\.\d+|-)$", log, re.M), row
    assert float(re.search(r"^avg length\s+(\S+)$", log, re.M).group(1)) > 0  # it learnt something
    assert "self-BLEU and div-4 over the first 3 candidates of each source" in log
    assert "BERTScore skipped" in log
    text = (tmp_path / "ckpt" / "generate-test.txt").read_text(encoding="utf-8")
    assert "T-0\tis it safe to go travelling alone ?" in text  # the ## pieces joined
    assert len(re.findall(r"^D-\d+\t", text, re.M)) == 30

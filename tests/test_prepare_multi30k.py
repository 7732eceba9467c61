"""Tests for scripts/prepare_multi30k.sh (and scripts/multi30k_text.py) on a tiny fake Multi30k."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "prepare_multi30k.sh"
SUBJECTS = [("Ein Mann", "A man"), ("Eine Frau", "A woman"), ("Zwei Kinder", "Two children"),
            ("Ein blauäugiger Hund", "A blue-eyed dog"), ("Die Leute", "The people")]
ACTIONS = [("läuft", "runs"), ("sitzt im Park", "sits in the park"), ("isst", "eats"),
           ("spielt Fußball", "plays soccer"), ("lacht", "laughs"), ("schläft", "sleeps"),
           ("liest ein Buch", "reads a book"), ("wartet", "waits")]
PAIRS = [(f"{de} {dv}.", f"{en} {ev}.") for de, en in SUBJECTS for dv, ev in ACTIONS]  # 40


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _fake_raw(root: Path) -> Path:
    """train: 40 pairs + an empty pair in the middle + the trailing blank line (2 dropped);
    val: 6 pairs + a pair with only its English side empty + trailing blank (2 dropped);
    test: 5 pairs, no blank line (0 dropped)."""
    raw = root / "raw"
    raw.mkdir()
    splits = {
        "train": PAIRS[:20] + [("", "")] + PAIRS[20:] + [("", "")],
        "val": PAIRS[:3] + [("Ein Hund bellt.", "  ")] + PAIRS[3:6] + [("", "")],
        "test": PAIRS[6:11],
    }
    for stem, pairs in splits.items():
        _write(raw / f"{stem}.de", [de for de, _ in pairs])
        _write(raw / f"{stem}.en", [en for _, en in pairs])
    return raw


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_prepares_data_bin_and_skips_rerun(tmp_path: Path) -> None:
    raw, out, work = _fake_raw(tmp_path), tmp_path / "bin", tmp_path / "work"
    result = _run("--raw-dir", raw, "--out", out, "--work", work, "--bpe-merges", "60")
    assert result.returncode == 0, result.stderr
    log = result.stdout
    assert "train (train.*): 40 pairs kept, 2 dropped (empty on either side)" in log
    assert "valid (val.*): 6 pairs kept, 2 dropped (empty on either side)" in log
    assert "test (test.*): 5 pairs kept, 0 dropped (empty on either side)" in log
    assert "joint BPE: 60 merges (asked for 60)" in log

    names = ["dict.de.txt", "dict.en.txt", "prepare_multi30k.done"] + [
        f"{split}.de-en.{lang}.{ext}" for split in ("train", "valid", "test")
        for lang in ("de", "en") for ext in ("bin", "idx")]
    assert all((out / name).is_file() for name in names)
    assert (out / "dict.de.txt").read_text() == (out / "dict.en.txt").read_text()  # joined
    n_types = len((out / "dict.de.txt").read_text().splitlines())
    assert f"joined dictionary: {n_types} types" in log
    assert f"[en] Dictionary: {n_types + 4} types" in (out / "preprocess.log").read_text()

    for split, n in (("train", 40), ("valid", 6), ("test", 5)):
        for kind in ("raw", "tok", "bpe"):
            de = (work / f"{split}.{kind}.de").read_text(encoding="utf-8").splitlines()
            en = (work / f"{split}.{kind}.en").read_text(encoding="utf-8").splitlines()
            assert len(de) == len(en) == n and all(de) and all(en)
        binarised = re.findall(rf"{split}\.bpe\.(de|en): (\d+) sents",
                               (out / "preprocess.log").read_text())
        assert sorted(binarised) == [("de", str(n)), ("en", str(n))]
    assert (work / "test.raw.en").read_text(encoding="utf-8").splitlines() == \
        [en for _, en in PAIRS[6:11]]
    assert "A blue @-@ eyed dog sleeps ." in (work / "train.tok.en").read_text(encoding="utf-8")
    assert (work / "code").read_text(encoding="utf-8").startswith("#version")

    again = _run("--raw-dir", raw, "--out", out, "--work", work, "--bpe-merges", "60")
    assert again.returncode == 0 and "skip:" in again.stdout and "already complete" in again.stdout
    other = _run("--raw-dir", raw, "--out", out, "--work", work, "--bpe-merges", "50")
    assert other.returncode != 0 and "other settings" in other.stderr
    forced = _run("--raw-dir", raw, "--out", out, "--work", work, "--bpe-merges", "50", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "joint BPE: 50 merges" in forced.stdout
    assert " bpe_merges=50 " in (out / "prepare_multi30k.done").read_text()
    assert len(re.findall(r"train\.bpe\.en: 40 sents", (out / "preprocess.log").read_text())) == 1


def test_missing_raw_files_are_listed(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    _write(raw / "train.de", ["Ein Mann."])
    result = _run("--raw-dir", raw, "--out", tmp_path / "bin")
    assert result.returncode != 0
    assert "missing raw files" in result.stderr
    assert "train.en, val.de, val.en, test.de, test.en" in result.stderr
    assert "multi30k/dataset" in result.stderr and "data/task1/raw" in result.stderr


def test_line_count_mismatch_is_an_error(tmp_path: Path) -> None:
    raw = _fake_raw(tmp_path)
    lines = (raw / "val.en").read_text(encoding="utf-8").splitlines()
    _write(raw / "val.en", lines[:-2])
    result = _run("--raw-dir", raw, "--out", tmp_path / "bin")
    assert result.returncode != 0
    assert "line count mismatch" in result.stderr
    assert re.search(r"val\.de has 8 lines but \S*val\.en has 6", result.stderr)
    assert not (tmp_path / "bin").exists()


@pytest.mark.parametrize("args, message", [
    (["--out", "x"], "--raw-dir and --out are required"),
    (["--raw-dir", "r", "--out", "x", "--bpe-merges", "ten"], "positive integer"),
    (["--bogus"], "unknown argument"),
])
def test_bad_arguments(args: list[str], message: str) -> None:
    result = _run(*args)
    assert result.returncode != 0 and message in result.stderr


def test_help_documents_tools() -> None:
    result = _run("--help")
    assert result.returncode == 0
    assert "${PYTHON:-python}" in result.stdout and "fairseq-preprocess from" in result.stdout


def test_text_stage_lowercase_keeps_cased_reference(tmp_path: Path) -> None:
    raw, work = _fake_raw(tmp_path), tmp_path / "work"
    subprocess.run([sys.executable, str(REPO / "scripts" / "multi30k_text.py"), "--raw-dir",
                    str(raw), "--work", str(work), "--bpe-merges", "20", "--lowercase"],
                   check=True, capture_output=True, text=True, timeout=60)
    first = {kind: (work / f"test.{kind}.en").read_text(encoding="utf-8").splitlines()[0]
             for kind in ("tok", "raw")}
    assert first == {"tok": "a man reads a book .", "raw": "A man reads a book."}

"""scripts/prepare_seq2seq.sh (and scripts/seq2seq_text.py) on tiny splits in DiffuSeq's released
layout (RAW/{train,valid,test}.jsonl, JSON lines with "src" and "trg") and as plain text."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VERBS = ["learn", "improve", "practice", "teach", "forget"]
OBJECTS = ["Python", "English", "the guitar", "chess", "French", "cooking"]
PAIRS = [(f"How can I {v} {o}?", f"What is the best way to {v} {o}?") for v in VERBS for o in OBJECTS]
TEST = [("Is travelling alone safe?", "Is it safe to go travelling alone?"),
        ("Where is the café?", "Which way to the café?")] + PAIRS[:1]
# 24 train pairs and 3 dropped (an empty source, a blank target, a blank line)
TRAIN = PAIRS[:12] + [("", "What?"), ("Why?", "   ")] + PAIRS[12:24] + [None]
VALID = PAIRS[24:28]


def write_jsonl(path: Path, pairs: list[tuple[str, str] | None]) -> None:
    path.write_text("".join("\n" if p is None else json.dumps({"src": p[0], "trg": p[1]},
                                                               ensure_ascii=False) + "\n"
                            for p in pairs), encoding="utf-8")


def release(root: Path) -> Path:
    """The tiny splits as DiffuSeq released them."""
    raw = root / "raw"
    raw.mkdir()
    for split, pairs in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        write_jsonl(raw / f"{split}.jsonl", pairs)
    return raw


def plain_text(root: Path) -> Path:
    """The same splits as line-aligned text (the blank line is an empty pair there too)."""
    raw = root / "text"
    raw.mkdir()
    for split, pairs in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        for k, side in enumerate(("src", "trg")):
            (raw / f"{split}.{side}").write_text(
                "".join(("" if p is None else p[k]) + "\n" for p in pairs), encoding="utf-8")
    return raw


def vocab_file(root: Path) -> tuple[Path, list[str]]:
    """A WordPiece vocabulary for the tiny data: every lowercased word but "travelling" (cut
    into travel ##ling) and "chess" (unknown), the specials and an unused entry."""
    words = sorted({w.lower() for pair in PAIRS + TEST for text in pair
                    for w in text.replace("?", " ").replace("é", "e").split()}
                   - {"travelling", "chess"})
    vocab = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "?", "travel",
             "##ling"]
    path = root / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path, vocab


def prepare(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               PYTHON=sys.executable, OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(REPO / "scripts" / "prepare_seq2seq.sh"), *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def binarised(out: Path, split: str, side: str) -> int:
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(str(out / f"dict.{side}.txt"))
    return len(data_utils.load_indexed_dataset(str(out / f"{split}.src-trg.{side}"), dictionary))


def test_jsonl_with_bpe_counts_dictionary_and_resume(tmp_path: Path) -> None:
    raw, out = release(tmp_path), tmp_path / "qqp"
    args = ["--task", "qqp", "--raw-dir", raw, "--out", out, "--bpe-merges", "40", "--workers", "1"]
    result = prepare(*args)
    assert result.returncode == 0, result.stderr
    log = result.stdout
    assert "train (train.jsonl): 24 pairs kept, 3 dropped (empty on either side)" in log
    assert "valid (valid.jsonl): 4 pairs kept, 0 dropped" in log
    assert "test (test.jsonl): 3 pairs kept, 0 dropped" in log
    assert "joint BPE: 40 merges (asked for 40)" in log and "lowercase: yes" in log
    work = Path(f"{out}_work")
    for split, n in (("train", 24), ("valid", 4), ("test", 3)):
        for side in ("src", "trg"):
            assert len(lines(work / f"{split}.bpe.{side}")) == n == binarised(out, split, side)
    assert lines(work / "train.raw.src") == [s for s, _ in PAIRS[:24]]
    assert lines(work / "test.raw.trg") == [t for _, t in TEST]  # raw references keep their case
    assert lines(work / "test.tok.src")[1] == "where is the café ?"
    # the joined dictionary: exactly the types of both train sides, lowercased
    types = {w for side in ("src", "trg") for line in lines(work / f"train.bpe.{side}")
             for w in line.split()}
    dictionary = (out / "dict.src.txt").read_text(encoding="utf-8")
    assert dictionary == (out / "dict.trg.txt").read_text(encoding="utf-8")
    words = [line.split()[0] for line in dictionary.splitlines()]
    assert {w for w in words if not w.startswith("madeupword")} == types
    assert (len(words) + 4) % 8 == 0  # fairseq pads the vocabulary to a multiple of 8
    assert "?" in types and not any(w != w.lower() for w in types)
    assert f"joined dictionary: {len(words)} types" in log
    assert lines(out / "prepare_qqp.done")[0].startswith("read: qqp raw_dir=")

    again = prepare(*args)
    assert again.returncode == 0, again.stderr
    for step in ("read", "tokenize", "subwords", "binarize"):
        assert f"skip: step '{step}' already done" in again.stdout
    merges = prepare(*args[:6], "--bpe-merges", "30", "--cased", "--workers", "1")
    assert merges.returncode == 0, merges.stderr
    assert "skip: step 'read'" in merges.stdout and "== step 'tokenize' (moses lowercase=False)" \
        in merges.stdout and "joint BPE: 30 merges" in merges.stdout
    assert "skip: step 'binarize'" not in merges.stdout
    assert lines(work / "test.tok.src")[1] == "Where is the café ?"


def test_plain_text_with_a_wordpiece_vocabulary(tmp_path: Path) -> None:
    raw, out = plain_text(tmp_path), tmp_path / "wp"
    vocab, entries = vocab_file(tmp_path)
    result = prepare("--task", "quasar_t", "--raw-dir", raw, "--out", out, "--vocab", "bert",
                     "--vocab-file", vocab, "--workers", "1")
    assert result.returncode == 0, result.stderr
    log = result.stdout
    assert "train (train.{src,trg}): 24 pairs kept, 3 dropped (empty on either side)" in log
    assert "test.src: 3 lines, " in log
    work = Path(f"{out}_work")
    assert lines(work / "test.bpe.src") == ["is travel ##ling alone safe ?", "where is the cafe ?",
                                            "how can i learn python ?"]
    chess = sum(line.split().count("<unk>") for line in lines(work / "train.bpe.src"))
    assert chess == 4  # "chess" is not in the vocabulary: one unknown piece for each
    assert "train.src: 24 lines, " in log and f", {chess} of " in log
    # the dictionary is the vocabulary, in order, without [PAD], [UNK], ... and [unused0]
    assert lines(out / "dict.src.txt") == [f"{e} 1" for e in entries[6:]]
    assert lines(out / "dict.trg.txt") == lines(out / "dict.src.txt")
    assert f"dictionary: {len(entries) - 6} of the {len(entries)} entries" in log
    for split, n in (("train", 24), ("valid", 4), ("test", 3)):
        assert binarised(out, split, "trg") == n
    assert "subwords: wordpiece vocab=" in (out / "prepare_quasar_t.done").read_text()


def _text_stage_refusals(tmp: Path) -> dict[str, tuple[list[str | Path], str]]:
    good = release(tmp)
    vocab, _ = vocab_file(tmp)

    def raw(name: str, files: dict[str, str]) -> Path:
        folder = tmp / name
        folder.mkdir()
        for file, text in files.items():
            (folder / file).write_text(text, encoding="utf-8")
        return folder

    ok = json.dumps({"src": "a", "trg": "b"}) + "\n"
    splits = {"valid.jsonl": ok, "test.jsonl": ok}
    text = {f"{s}.{side}": "a\nb\n" for s in ("train", "valid", "test") for side in ("src", "trg")}
    duplicate = tmp / "duplicate.txt"
    duplicate.write_text("a\nb\na\n", encoding="utf-8")
    qqp = ["--task", "qqp", "--work", tmp / "work", "--raw-dir"]
    return {
        "missing jsonl": ([*qqp, raw("a", {"train.jsonl": ok})],
                          "a: valid.jsonl, test.jsonl. QQP (paraphrase): DiffuSeq's authors"),
        "missing text": ([*qqp, raw("b", {"train.src": "a\n", "train.trg": "b\n", "valid.src": "a\n"})],
                         "b: valid.trg, test.src, test.trg. QQP"),
        "both formats": ([*qqp, raw("c", {**splits, "train.jsonl": ok, "train.src": "a\n"})],
                         "holds both jsonl (test.jsonl, train.jsonl, valid.jsonl) and plain text "
                         "(train.src): keep one format"),
        "not json": ([*qqp, raw("d", {**splits, "train.jsonl": ok + "{src: 1}\n"})],
                     "train.jsonl line 2: not JSON (Expecting property name"),
        "no trg": ([*qqp, raw("e", {**splits, "train.jsonl": '{"src": "a", "tgt": "b"}\n'})],
                   'train.jsonl line 1: expected an object with the strings "src" and "trg", got '
                   '\'{"src": "a", "tgt": "b"}\''),
        "not a string": ([*qqp, raw("f", {**splits, "train.jsonl": '{"src": "a", "trg": 3}\n'})],
                         'line 1: expected an object with the strings "src" and "trg"'),
        "mismatched sides": ([*qqp, raw("g", {**text, "valid.trg": "a\n"})],
                             f"line count mismatch: {tmp}/g/valid.src has 2 lines but "
                             f"{tmp}/g/valid.trg has 1"),
        "all empty": ([*qqp, raw("h", {**splits, "train.jsonl": '{"src": "", "trg": "b"}\n'})],
                      f"no non-empty pairs in {tmp}/h/train.jsonl"),
        "bert without vocab": ([*qqp, good, "--vocab", "bert"], "--vocab bert needs --vocab-file FILE"),
        "missing vocab": ([*qqp, good, "--vocab", "bert", "--vocab-file", tmp / "nope.txt"],
                          f"--vocab-file {tmp}/nope.txt is not a file"),
        "vocab with bpe": ([*qqp, good, "--vocab-file", vocab], "--vocab-file applies to --vocab bert only"),
        "merges with bert": ([*qqp, good, "--vocab", "bert", "--vocab-file", vocab, "--bpe-merges", "5"],
                             "--bpe-merges applies to --vocab bpe only"),
        "duplicate vocab": ([*qqp, good, "--vocab", "bert", "--vocab-file", duplicate],
                            f"--vocab-file: {duplicate} line 3: 'a' repeats line 1"),
    }


def test_text_stage_refusals_name_their_cause(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    import seq2seq_text

    for name, (args, message) in _text_stage_refusals(tmp_path).items():
        assert seq2seq_text.main([str(a) for a in args]) == 2, name
        assert message in capsys.readouterr().err, name


@pytest.mark.parametrize("args, message", [
    (["--task", "qqp"], "--raw-dir not given, and nothing is downloaded. QQP (paraphrase): "
     "DiffuSeq's authors released the splits as train.jsonl, valid.jsonl and test.jsonl"),
    (["--task", "wiki_auto"], "677,751 / 2,048 / 5,000 train / valid / test pairs"),
    (["--raw-dir", "."], "--task is required"),
    (["--task", "gigaword"], "invalid choice: 'gigaword'"),
    (["--task", "qqp", "--raw-dir", "/nonexistent"], "--raw-dir /nonexistent is not a directory"),
    (["--task", "qqp", "--bpe-merges", "ten"], "--bpe-merges takes a positive integer, got 'ten'"),
    (["--task", "qqp", "--workers", "0"], "--workers takes a positive integer, got '0'"),
    (["--task", "qqp", "--vocab"], "--vocab needs a value"),
    (["--task", "qqp", "--lowercase"], "unknown argument: --lowercase"),
])
def test_script_refusals(tmp_path: Path, args: list[str], message: str) -> None:
    result = prepare("--out", tmp_path / "out", *args)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "out").exists()
    if args == ["--task", "qqp"]:
        assert "https://github.com/Shark-NLP/DiffuSeq" in result.stderr
        assert "DIR/{train,valid,test}.{src,trg}" in result.stderr


def test_help() -> None:
    result = prepare("--help")
    assert result.returncode == 0 and "--vocab-file FILE" in result.stdout
    assert "qqp, wiki_auto, quasar_t or conversation" in result.stdout

"""Text stage of ``scripts/prepare_seq2seq.sh``: the papers' non-translation splits to subword text.

Reads ``RAW/{train,valid,test}.jsonl``, the format in which DiffuSeq's authors released the splits
(one JSON object a line with the strings ``src`` and ``trg``), or plain line-aligned text
``RAW/{split}.src`` + ``RAW/{split}.trg``, and writes to WORK, each step skipped on a rerun with
the same settings (``corpus.Steps``):

1. ``read`` - ``{split}.raw.{src,trg}``: the pairs, cleaned (``corpus.one_line``); pairs with an
   empty side (a blank jsonl line is one) are dropped and counted;
2. ``--vocab bpe``: ``tokenize`` - sacremoses, lowercased unless ``--cased`` ->
   ``{split}.tok.*``; ``subwords`` - a joint subword-nmt BPE learned on both train sides ->
   ``code``, ``{split}.bpe.*``;
   ``--vocab bert``: ``subwords`` - BERT's basic tokenisation and greedy longest-match-first
   WordPiece over ``--vocab-file`` (``diffusion_plugin.wordpiece``, offline) -> ``{split}.bpe.*``
   and ``dict.txt``, the vocabulary as a fairseq dictionary.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from corpus import (SPLITS, DataError, Steps, aligned_pairs, fail, file_digest, joint_bpe_files,
                    read_lines, tokenize_files, write_lines)

SIDES = ("src", "trg")
DEFAULT_MERGES = 10000
RELEASE = ("DiffuSeq's authors released the splits as train.jsonl, valid.jsonl and test.jsonl "
           "(JSON lines with \"src\" and \"trg\"): see the datasets table in the README of "
           "https://github.com/Shark-NLP/DiffuSeq")


@dataclass(frozen=True)
class Task:
    """A non-translation task of the papers: its name there, the original corpus, and the split
    sizes of SeqDiffuSeq Table 4 (= Difformer Table 20 where both list it)."""

    title: str
    origin: str
    sizes: tuple[int, int, int]


TASKS = {
    "qqp": Task("QQP (paraphrase)", "Quora Question Pairs, the positive pairs (GLUE)",
                (144715, 2048, 2500)),
    "wiki_auto": Task("Wiki-Auto (text simplification)",
                      "Jiang et al. 2020, English / Simple English Wikipedia alignments",
                      (677751, 2048, 5000)),
    "quasar_t": Task("Quasar-T (question generation)",
                     "Dhingra et al. 2017 as preprocessed by Lin et al. 2018; (document, "
                     "question) pairs whose answer the document contains (DiffuSeq App. D.1)",
                     (116953, 2048, 10000)),
    "conversation": Task("Commonsense Conversation (dialogue)",
                         "Zhou et al. 2018, single-round Reddit dialogues",
                         (3382137, 2048, 10000)),
}


def where(task: str) -> str:
    """Where the task's data is published, and what --raw-dir must hold."""
    t = TASKS[task]
    sizes = " / ".join(f"{n:,}" for n in t.sizes)
    return (f"{t.title}: {RELEASE}; {sizes} train / valid / test pairs in the papers (origin: "
            f"{t.origin}). Download the task's files and pass --raw-dir DIR, or put plain "
            "line-aligned text in DIR/{train,valid,test}.{src,trg}")


def raw_format(raw_dir: Path, task: str) -> str:
    """``jsonl`` or ``text``: which complete set of raw files ``raw_dir`` holds; DataError when
    it holds both kinds or neither complete (listing the missing files)."""
    jsonl = [f"{split}.jsonl" for split in SPLITS]
    text = [f"{split}.{side}" for split in SPLITS for side in SIDES]
    have = {name for name in jsonl + text if (raw_dir / name).is_file()}
    if have & set(jsonl) and have & set(text):
        raise DataError(f"{raw_dir} holds both jsonl ({', '.join(sorted(have & set(jsonl)))}) and "
                        f"plain text ({', '.join(sorted(have & set(text)))}): keep one format")
    for kind, names in (("jsonl", jsonl), ("text", text)):
        if set(names) <= have:
            return kind
    names = text if have & set(text) else jsonl
    missing = [name for name in names if name not in have]
    raise DataError(f"missing raw files in {raw_dir}: {', '.join(missing)}. {where(task)}")


def read_jsonl(path: Path) -> tuple[list[str], list[str]]:
    """The ``src`` and ``trg`` strings of every line (a blank line gives an empty pair);
    DataError naming the line that is not such an object."""
    src, trg = [], []
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            src.append("")
            trg.append("")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path} line {number}: not JSON ({error.msg})") from error
        if not (isinstance(record, dict) and all(isinstance(record.get(s), str) for s in SIDES)):
            raise DataError(f"{path} line {number}: expected an object with the strings \"src\" "
                            f"and \"trg\", got {line[:80]!r}")
        src.append(record["src"])
        trg.append(record["trg"])
    return src, trg


def read_split(raw_dir: Path, split: str, kind: str) -> tuple[list[str], list[str], int, str]:
    """Kept source and target lines of one split, the number of dropped pairs and the files."""
    if kind == "jsonl":
        path = raw_dir / f"{split}.jsonl"
        src, trg = read_jsonl(path)
        names = (f"{path} (src)", f"{path} (trg)")
        label = path.name
    else:
        paths = [raw_dir / f"{split}.{side}" for side in SIDES]
        src, trg = (read_lines(path) for path in paths)
        names = (str(paths[0]), str(paths[1]))
        label = f"{split}.{{src,trg}}"
    kept_src, kept_trg, dropped = aligned_pairs(src, trg, *names)
    if not kept_src:
        raise DataError(f"no non-empty pairs in {raw_dir}/{label}")
    return kept_src, kept_trg, dropped, label


def write_wordpiece(work: Path, vocab_file: Path, lowercase: bool) -> None:
    """``{split}.raw.*`` -> ``{split}.bpe.*`` WordPiece pieces, and ``dict.txt``."""
    import checkout  # noqa: F401  (the plugin from this checkout when not installed)
    from diffusion_plugin.wordpiece import UNKNOWN, WordPiece, dictionary_entries, load_vocab

    try:
        vocab = load_vocab(vocab_file)
    except ValueError as error:
        raise DataError(f"--vocab-file: {error}") from error
    tokenizer = WordPiece(vocab, lowercase)
    for split in SPLITS:
        for side in SIDES:
            pieces = [tokenizer.encode(line) for line in read_lines(work / f"{split}.raw.{side}")]
            write_lines(work / f"{split}.bpe.{side}", pieces)
            tokens = [p for line in pieces for p in line.split()]
            print(f"{split}.{side}: {len(pieces)} lines, {len(set(tokens))} WordPiece types, "
                  f"{tokens.count(UNKNOWN)} of {len(tokens)} pieces unknown", flush=True)
    entries = dictionary_entries(vocab)
    write_lines(work / "dict.txt", [f"{entry} 1" for entry in entries])
    print(f"dictionary: {len(entries)} of the {len(vocab)} entries of {vocab_file} (bracketed and "
          f"fairseq's own symbols left out) -> {work / 'dict.txt'}", flush=True)


def check_settings(vocab: str, vocab_file: Optional[Path], merges: Optional[int]) -> None:
    """DataError naming the flag of an inconsistent setting."""
    if vocab == "bert":
        if vocab_file is None:
            raise DataError("--vocab bert needs --vocab-file FILE (a WordPiece vocab.txt, e.g. "
                            "bert-base-uncased's; nothing is downloaded)")
        if not vocab_file.is_file():
            raise DataError(f"--vocab-file {vocab_file} is not a file")
        if merges is not None:
            raise DataError("--bpe-merges applies to --vocab bpe only")
    elif vocab_file is not None:
        raise DataError("--vocab-file applies to --vocab bert only")
    if merges is not None and merges < 1:
        raise DataError(f"--bpe-merges must be a positive integer, got {merges}")


def prepare(task: str, raw_dir: Optional[Path], work: Path, vocab: str,
            vocab_file: Optional[Path], merges: Optional[int], lowercase: bool,
            workers: int) -> None:
    """Run the text stage's steps, printing counts as they go."""
    check_settings(vocab, vocab_file, merges)
    if raw_dir is None:
        raise DataError(f"--raw-dir not given, and nothing is downloaded. {where(task)}")
    kind = raw_format(raw_dir, task)
    steps = Steps(work)

    def read() -> None:
        for split in SPLITS:
            src, trg, dropped, label = read_split(raw_dir, split, kind)
            write_lines(work / f"{split}.raw.src", src)
            write_lines(work / f"{split}.raw.trg", trg)
            print(f"{split} ({label}): {len(src)} pairs kept, {dropped} dropped (empty on either "
                  "side)", flush=True)

    steps.run("read", f"{task} raw_dir={raw_dir} format={kind}", read)
    if vocab == "bert":
        assert vocab_file is not None
        steps.run("subwords", f"wordpiece vocab={vocab_file} "
                  f"sha256={file_digest(vocab_file, 'sha256')} lowercase={lowercase}",
                  lambda: write_wordpiece(work, vocab_file, lowercase))
    else:
        merges = merges or DEFAULT_MERGES
        steps.run("tokenize", f"moses lowercase={lowercase}",
                  lambda: tokenize_files(work, SPLITS, SIDES, lowercase, workers=workers,
                                         moses_lang="en"))
        steps.run("subwords", f"bpe merges={merges}",
                  lambda: joint_bpe_files(work, "tok", SIDES, merges))
    print(f"lowercase: {'yes' if lowercase else 'no (cased)'}; text files in {work}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 for data and setting errors)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--raw-dir", type=Path, help="the task's files (nothing is downloaded)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--vocab", choices=["bpe", "bert"], default="bpe")
    parser.add_argument("--vocab-file", type=Path, help="WordPiece vocab.txt for --vocab bert")
    parser.add_argument("--bpe-merges", type=int, help=f"default {DEFAULT_MERGES}")
    parser.add_argument("--cased", action="store_true", help="keep case (default: lowercase)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        prepare(args.task, args.raw_dir, args.work, args.vocab, args.vocab_file, args.bpe_merges,
                not args.cased, args.workers)
    except DataError as error:
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Text stage of ``scripts/prepare_multi30k.sh``: check, clean, tokenise and joint-BPE Multi30k.

Reads ``RAW/{train,val,test}.{SRC,TGT}`` and writes to ``WORK``, with fairseq's split names
(``val`` becomes ``valid``):

* ``{split}.raw.{lang}`` - the raw sentences of the kept pairs (``test.raw.TGT`` is the
  untokenised reference for sacrebleu);
* ``{split}.tok.{lang}`` - Moses-tokenised (sacremoses, ``escape=False`` so ``&``, quotes and
  apostrophes stay literal, ``aggressive_dash_splits=True`` so ``blue-eyed`` becomes
  ``blue @-@ eyed``, as in fairseq's example scripts; ``MosesDetokenizer`` undoes both), and
  lowercased with ``--lowercase``;
* ``code`` - joint BPE merges learned with subword-nmt on the tokenised train text of both sides;
* ``{split}.bpe.{lang}`` - the BPE-segmented text (``@@`` continuation marker) that
  fairseq-preprocess binarises.

Pairs in which either side is empty or blank (for instance the blank line the raw files end
with) are dropped and counted.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

os.environ.setdefault("TQDM_DISABLE", "1")  # subword-nmt's learn_bpe draws a bar per merge

from sacremoses import MosesTokenizer  # noqa: E402
from subword_nmt.apply_bpe import BPE  # noqa: E402
from subword_nmt.learn_bpe import learn_bpe  # noqa: E402

SPLITS = {"train": "train", "valid": "val", "test": "test"}  # fairseq name -> raw file stem
WHERE_TO_GET = (
    "Get them from the public Multi30k release on GitHub (repository multi30k/dataset, "
    "folder data/task1/raw): gunzip train.*.gz, val.*.gz and test_2016_flickr.*.gz, and "
    "rename test_2016_flickr.* to test.*."
)


class DataError(Exception):
    """Raw data missing or inconsistent; the message says what and where."""


def read_lines(path: Path) -> list[str]:
    """Lines split on ``\\n`` only (as ``wc -l`` counts them), without line terminators."""
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\r\n") for line in f]


def write_lines(path: Path, lines: Sequence[str]) -> None:
    """Write one line per item, ``\\n``-terminated."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)


def check_raw_files(raw_dir: Path, langs: Sequence[str]) -> None:
    """Raise DataError listing every missing ``{train,val,test}.{lang}`` file."""
    missing = [f"{stem}.{lang}" for stem in SPLITS.values() for lang in langs
               if not (raw_dir / f"{stem}.{lang}").is_file()]
    if missing:
        raise DataError(f"missing raw files in {raw_dir}: {', '.join(missing)}. {WHERE_TO_GET}")


def load_pairs(raw_dir: Path, stem: str, src: str, tgt: str) -> tuple[list[str], list[str], int]:
    """Kept source lines, kept target lines, and number of dropped (empty) pairs of one split."""
    src_lines = read_lines(raw_dir / f"{stem}.{src}")
    tgt_lines = read_lines(raw_dir / f"{stem}.{tgt}")
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"line count mismatch: {raw_dir / f'{stem}.{src}'} has {len(src_lines)} lines but "
            f"{raw_dir / f'{stem}.{tgt}'} has {len(tgt_lines)}; the sides must be line-aligned"
        )
    kept = [(s.strip(), t.strip()) for s, t in zip(src_lines, tgt_lines) if s.strip() and t.strip()]
    return [s for s, _ in kept], [t for _, t in kept], len(src_lines) - len(kept)


def tokenize(lines: Sequence[str], lang: str, lowercase: bool) -> list[str]:
    """Moses-tokenise (see module docstring for the options), optionally lowercasing."""
    tokenizer = MosesTokenizer(lang=lang)
    out = [tokenizer.tokenize(line, escape=False, aggressive_dash_splits=True, return_str=True)
           for line in lines]
    return [line.lower() for line in out] if lowercase else out


def prepare(raw_dir: Path, work: Path, src: str, tgt: str, merges: int, lowercase: bool) -> None:
    """Run the whole text stage, printing counts as it goes."""
    check_raw_files(raw_dir, (src, tgt))
    work.mkdir(parents=True, exist_ok=True)
    tokenized: dict[tuple[str, str], list[str]] = {}
    for split, stem in SPLITS.items():
        src_lines, tgt_lines, dropped = load_pairs(raw_dir, stem, src, tgt)
        if not src_lines:
            raise DataError(f"no non-empty sentence pairs in {raw_dir}/{stem}.{{{src},{tgt}}}")
        for lang, lines in ((src, src_lines), (tgt, tgt_lines)):
            write_lines(work / f"{split}.raw.{lang}", lines)
            tokenized[split, lang] = tokenize(lines, lang, lowercase)
            write_lines(work / f"{split}.tok.{lang}", tokenized[split, lang])
        n_tokens = {lang: sum(len(x.split()) for x in tokenized[split, lang])
                    for lang in (src, tgt)}
        print(f"{split} ({stem}.*): {len(src_lines)} pairs kept, "
              f"{dropped} dropped (empty on either side); "
              f"tokens {src}={n_tokens[src]} {tgt}={n_tokens[tgt]}")

    codes = work / "code"
    with open(codes, "w", encoding="utf-8") as f:
        learn_bpe(tokenized["train", src] + tokenized["train", tgt], f, merges)
    with open(codes, encoding="utf-8") as f:
        n_merges = sum(1 for _ in f) - 1  # first line is the "#version" header
        f.seek(0)
        bpe = BPE(f)
    print(f"joint BPE: {n_merges} merges (asked for {merges}) -> {codes}")
    for (split, lang), lines in tokenized.items():
        segmented = [bpe.process_line(line) for line in lines]
        write_lines(work / f"{split}.bpe.{lang}", segmented)
        if split == "train":
            types = len({w for line in segmented for w in line.split()})
            print(f"train BPE types {lang}: {types}")
    print(f"lowercase: {'yes' if lowercase else 'no (cased)'}; text files in {work}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 for data errors)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--src", default="de")
    parser.add_argument("--tgt", default="en")
    parser.add_argument("--bpe-merges", type=int, default=10000)
    parser.add_argument("--lowercase", action="store_true")
    args = parser.parse_args(argv)
    try:
        prepare(args.raw_dir, args.work, args.src, args.tgt, args.bpe_merges, args.lowercase)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

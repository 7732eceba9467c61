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
import sys
from pathlib import Path
from typing import Optional, Sequence

from corpus import (DataError, aligned_pairs, apply_bpe, fail, learn_joint_bpe, read_lines,
                    tokenize, write_lines)

SPLITS = {"train": "train", "valid": "val", "test": "test"}  # fairseq name -> raw file stem
WHERE_TO_GET = (
    "Get them from the public Multi30k release on GitHub (repository multi30k/dataset, "
    "folder data/task1/raw): gunzip train.*.gz, val.*.gz and test_2016_flickr.*.gz, and "
    "rename test_2016_flickr.* to test.*."
)


def check_raw_files(raw_dir: Path, langs: Sequence[str]) -> None:
    """Raise DataError listing every missing ``{train,val,test}.{lang}`` file."""
    missing = [f"{stem}.{lang}" for stem in SPLITS.values() for lang in langs
               if not (raw_dir / f"{stem}.{lang}").is_file()]
    if missing:
        raise DataError(f"missing raw files in {raw_dir}: {', '.join(missing)}. {WHERE_TO_GET}")


def load_pairs(raw_dir: Path, stem: str, src: str, tgt: str) -> tuple[list[str], list[str], int]:
    """Kept source lines, kept target lines, and number of dropped (empty) pairs of one split."""
    src_path, tgt_path = raw_dir / f"{stem}.{src}", raw_dir / f"{stem}.{tgt}"
    return aligned_pairs(read_lines(src_path), read_lines(tgt_path), str(src_path), str(tgt_path))


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
    n_merges = learn_joint_bpe([tokenized["train", src], tokenized["train", tgt]], codes, merges)
    print(f"joint BPE: {n_merges} merges (asked for {merges}) -> {codes}")
    for (split, lang), lines in tokenized.items():
        segmented = apply_bpe(codes, lines)
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
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())

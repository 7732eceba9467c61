"""Text side of ``scripts/distill.sh``: pair each training source with its teacher translation.

Sources are decoded from the binarised train split of the data-bin (BPE kept), targets are the
``H-`` lines of ``fairseq-generate --gen-subset train`` (no ``--remove-bpe``), ordered by id.
Writes ``OUT.SRC`` and ``OUT.TGT``; pairs whose translation is empty are dropped and counted.
With ``--max-length-ratio R``, a translation of more than R·|x| + 5 tokens (an undertrained
teacher's repetition loop, up to fairseq's 200-token limit) is replaced by the original target.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from corpus import write_lines

HYPOTHESIS = re.compile(r"^H-(\d+)\t[^\t]*\t(.*)$")


def teacher_translations(path: Path, n: int) -> list[str]:
    """The best ``H-`` line of each of the ids 0..n-1 in a fairseq-generate output."""
    found: dict[int, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = HYPOTHESIS.match(line.rstrip("\n"))
            if match:
                found.setdefault(int(match.group(1)), match.group(2))
    missing = [i for i in range(n) if i not in found]
    if missing or len(found) != n:
        raise SystemExit(f"{path} has {len(found)} translations for {n} train sentences "
                         f"(first missing ids: {missing[:10]}): was a batch skipped (too long)?")
    return [found[i] for i in range(n)]


def train_side(data_bin: Path, src: str, tgt: str, lang: str) -> list[str]:
    """One side of the train split as dictionary strings (BPE kept, no EOS)."""
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(str(data_bin / f"dict.{lang}.txt"))
    dataset = data_utils.load_indexed_dataset(str(data_bin / f"train.{src}-{tgt}.{lang}"),
                                              dictionary)
    if dataset is None:
        raise SystemExit(f"no train.{src}-{tgt}.{lang} in {data_bin}")
    return [dictionary.string(dataset[i]) for i in range(len(dataset))]


def replace_runaways(sources: list[str], targets: list[str], originals: list[str],
                     ratio: float) -> tuple[list[str], int]:
    """Targets longer than ratio·|source| + 5 tokens replaced by the original ones; how many."""
    out, replaced = [], 0
    for source, target, original in zip(sources, targets, originals):
        if len(target.split()) > ratio * len(source.split()) + 5:
            out.append(original)
            replaced += 1
        else:
            out.append(target)
    return out, replaced


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generate_output", help="fairseq-generate output on the train split")
    parser.add_argument("--data-bin", type=Path, required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--tgt", required=True)
    parser.add_argument("--out", required=True, help="output prefix: writes OUT.SRC, OUT.TGT")
    parser.add_argument("--max-length-ratio", type=float, metavar="R",
                        help="replace translations longer than R·|source| + 5 tokens by the original targets")
    args = parser.parse_args(argv)
    if args.max_length_ratio is not None and args.max_length_ratio <= 0:
        parser.error(f"--max-length-ratio must be > 0, got {args.max_length_ratio}")
    sources = train_side(args.data_bin, args.src, args.tgt, args.src)
    targets = teacher_translations(Path(args.generate_output), len(sources))
    replaced = 0
    if args.max_length_ratio is not None:
        originals = train_side(args.data_bin, args.src, args.tgt, args.tgt)
        targets, replaced = replace_runaways(sources, targets, originals, args.max_length_ratio)
    kept = [(s, t) for s, t in zip(sources, targets) if t.strip()]
    write_lines(Path(f"{args.out}.{args.src}"), [s for s, _ in kept])
    write_lines(Path(f"{args.out}.{args.tgt}"), [t for _, t in kept])
    print(f"distilled train: {len(kept)} pairs, {len(sources) - len(kept)} dropped "
          f"(empty teacher translation), {replaced} replaced by the original target "
          "(translation longer than --max-length-ratio allows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Text stage of ``prepare_wmt14.sh`` and ``prepare_iwslt14.sh``: archives to joint-BPE text.

Steps (each skipped on a rerun with the same settings, see ``corpus.Steps``), files in WORK:

1. ``fetch``/``extract`` - download (or read from ``--raw-dir``) and verify the archives, pull the
   sentences out of the release's files, drop pairs with an empty side (counted) and write
   ``{split}.raw.{lang}`` (``test.raw.TGT`` is the untokenised reference for sacrebleu);
2. ``tokenize`` - sacremoses -> ``{split}.tok.{lang}``;
3. ``clean`` - Moses clean-corpus-n on the train pairs (length 1..max_len, ratio) and, for
   IWSLT14, fairseq's held-out valid set (every 23rd cleaned train pair) -> ``{split}.clean.{lang}``;
4. ``bpe`` - joint subword-nmt BPE learned on the train text of both sides -> ``code``,
   ``{split}.bpe.{lang}``.
"""
from __future__ import annotations

import argparse
import html
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from corpus import (SPLITS, Archive, DataError, Steps, aligned_pairs, clean_pairs,
                    fetch_archives, fail, joint_bpe_files, read_lines, read_members,
                    tokenize_files, write_lines)

Pairs = tuple[list[str], list[str]]

# Sizes and sha256 as published in tensorflow-datasets' url_checksums/wmt14_translate.txt and
# wmt13_translate.txt; the md5 of test-full.tgz as published in sacrebleu's dataset table.
WMT14_ARCHIVES = [
    Archive("training-parallel-europarl-v7.tgz",
            "http://www.statmt.org/wmt13/training-parallel-europarl-v7.tgz", 657632379,
            "sha256:0224c7c710c8a063dfd893b0cc0830202d61f4c75c17eb8e31836103d27d96e7",
            "tensorflow-datasets url_checksums"),
    Archive("training-parallel-commoncrawl.tgz",
            "http://www.statmt.org/wmt13/training-parallel-commoncrawl.tgz", 918311367,
            "sha256:c7a74e2ea01ac6c920123108627e35278d4ccb5701e15428ffa34de86fa3a9e5",
            "tensorflow-datasets url_checksums"),
    Archive("training-parallel-nc-v9.tgz",
            "http://www.statmt.org/wmt14/training-parallel-nc-v9.tgz", 80418416,
            "sha256:cb8953f292298e6877ae433c98912b927cb0766b303f4540512ddd286c748485",
            "tensorflow-datasets url_checksums"),
    Archive("dev.tgz", "http://data.statmt.org/wmt19/translation-task/dev.tgz", 38654961,
            "sha256:7a7deccf82ebb05ba508dba5eb21356492224e8f630ec4f992132b029b4b25e7",
            "tensorflow-datasets url_checksums"),
    Archive("test-full.tgz", "https://statmt.org/wmt14/test-full.tgz", None,
            "md5:a8cd784e006feb32ac6f3d9ec7eb389a", "sacrebleu's wmt14/full entry"),
]
# fairseq's mirror of the IWSLT'14 de-en release (examples/translation/prepare-iwslt14.sh); no
# checksum is published for it.
IWSLT14_ARCHIVES = [
    Archive("de-en.tgz", "http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"),
]
# fairseq's customary IWSLT14 test set: 6750 sentences (Difformer Table 20)
IWSLT14_TEST_SETS = ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012")


def keep_pairs(src: Sequence[str], tgt: Sequence[str], src_name: str, tgt_name: str,
               label: str) -> Pairs:
    """:func:`corpus.aligned_pairs` with a log line of the kept and dropped counts."""
    kept_src, kept_tgt, dropped = aligned_pairs(src, tgt, src_name, tgt_name)
    print(f"{label}: {len(kept_src)} pairs kept, {dropped} dropped (empty on either side)",
          flush=True)
    return kept_src, kept_tgt


def segments(lines: Sequence[str], unescape: bool) -> list[str]:
    """The ``<seg id=...>text</seg>`` texts of an SGML/XML test file, in order."""
    found = [re.sub(r"^.*?<seg[^>]*>\s*(.*?)\s*</seg>.*$", r"\1", line)
             for line in lines if "<seg" in line]
    return [html.unescape(text) for text in found] if unescape else found


def wmt14_extract(paths: dict[str, Path], src: str, tgt: str) -> dict[str, Pairs]:
    """Train = Europarl v7 + Common Crawl + News Commentary v9, valid = newstest2013 (plain
    text in dev.tgz), test = newstest2014 full (SGML in test-full.tgz, read like sacrebleu)."""
    train: Pairs = ([], [])
    for archive, stem in (("training-parallel-europarl-v7.tgz", "training/europarl-v7.de-en"),
                          ("training-parallel-commoncrawl.tgz", "commoncrawl.de-en"),
                          ("training-parallel-nc-v9.tgz", "training/news-commentary-v9.de-en")):
        names = (f"{stem}.{src}", f"{stem}.{tgt}")
        lines = read_members(paths[archive], names)
        pairs = keep_pairs(lines[names[0]], lines[names[1]], *names, f"train {stem}")
        train[0].extend(pairs[0])
        train[1].extend(pairs[1])
    names = (f"dev/newstest2013.{src}", f"dev/newstest2013.{tgt}")
    lines = read_members(paths["dev.tgz"], names)
    valid = keep_pairs(lines[names[0]], lines[names[1]], *names, "valid newstest2013")
    names = (f"test-full/newstest2014-deen-src.{src}.sgm",
             f"test-full/newstest2014-deen-ref.{tgt}.sgm")
    lines = read_members(paths["test-full.tgz"], names)
    test = keep_pairs(segments(lines[names[0]], False), segments(lines[names[1]], False), *names,
                      "test newstest2014")
    return {"train": train, "valid": valid, "test": test}


TAG_LINES = ("<url>", "<talkid>", "<keywords>")  # dropped, as fairseq's prepare-iwslt14.sh
TAGS = re.compile(r"</?(title|description)>")  # removed, keeping the text


def iwslt14_extract(paths: dict[str, Path], src: str, tgt: str) -> dict[str, Pairs]:
    """Train = ``train.tags`` without the talk metadata lines; test = the segments of the
    ``IWSLT14_TEST_SETS`` XML files (entities unescaped, ’ -> '); valid is held out later."""
    def train_text(lines: list[str]) -> list[str]:
        return [TAGS.sub("", line) for line in lines if not any(t in line for t in TAG_LINES)]

    train_names = [f"de-en/train.tags.de-en.{lang}" for lang in (src, tgt)]
    test_names = {lang: [f"de-en/IWSLT14.{name}.de-en.{lang}.xml" for name in IWSLT14_TEST_SETS]
                  for lang in (src, tgt)}
    lines = read_members(paths["de-en.tgz"],
                         train_names + test_names[src] + test_names[tgt])
    train = keep_pairs(train_text(lines[train_names[0]]), train_text(lines[train_names[1]]),
                       *train_names, "train train.tags")
    test: Pairs = ([], [])
    for src_name, tgt_name in zip(test_names[src], test_names[tgt]):
        pairs = keep_pairs(*(segments([line.replace("\u2019", "'") for line in lines[name]], True)
                             for name in (src_name, tgt_name)),
                           src_name, tgt_name, f"test {'.'.join(src_name.split('.')[1:3])}")
        test[0].extend(pairs[0])
        test[1].extend(pairs[1])
    return {"train": train, "test": test}


@dataclass
class Recipe:
    """How one corpus is turned into text: archives, extraction and tokeniser settings."""

    archives: list[Archive]
    extract: Callable[[dict[str, Path], str, str], dict[str, Pairs]]
    langs: frozenset[str]
    lowercase: bool
    aggressive: bool  # Moses -a (aggressive hyphen splitting)
    normalize: bool  # Moses punctuation normalisation
    valid_every: int  # hold out every N-th cleaned train pair as valid (0: valid is given)


RECIPES = {
    "wmt14": Recipe(WMT14_ARCHIVES, wmt14_extract, frozenset({"en", "de"}), lowercase=False,
                    aggressive=True, normalize=True, valid_every=0),
    "iwslt14": Recipe(IWSLT14_ARCHIVES, iwslt14_extract, frozenset({"en", "de"}), lowercase=True,
                      aggressive=False, normalize=False, valid_every=23),
}


def prepare(corpus: str, raw_dir: Optional[Path], work: Path, src: str, tgt: str, merges: int,
            max_len: int, ratio: float, check: bool, workers: int) -> None:
    """Run the text stage's steps, printing counts as it goes."""
    recipe = RECIPES[corpus]
    if {src, tgt} != recipe.langs:
        raise DataError(f"{corpus} has languages {sorted(recipe.langs)}, got {src}-{tgt}")
    langs = (src, tgt)
    steps = Steps(work)

    def extract() -> None:
        paths = fetch_archives(recipe.archives, raw_dir, work / "archives", check)
        for split, pairs in recipe.extract(paths, src, tgt).items():
            for lang, lines in zip(langs, pairs):
                write_lines(work / f"{split}.raw.{lang}", lines)

    given = [s for s in SPLITS if not (recipe.valid_every and s == "valid")]

    def clean() -> None:
        train = clean_pairs(*(read_lines(work / f"train.tok.{lang}") for lang in langs),
                            max_len, ratio)
        n_tok = len(read_lines(work / f"train.tok.{src}"))
        print(f"train: {len(train[0])} of {n_tok} pairs kept by clean-corpus (1..{max_len} "
              f"tokens, ratio <= {ratio}), {n_tok - len(train[0])} dropped", flush=True)
        out = {"train": train}
        if recipe.valid_every:
            n = recipe.valid_every
            out["valid"] = tuple([x for i, x in enumerate(side, 1) if i % n == 0]
                                 for side in train)  # type: ignore[assignment]
            out["train"] = tuple([x for i, x in enumerate(side, 1) if i % n != 0]
                                 for side in train)  # type: ignore[assignment]
            print(f"valid: cleaned train pairs number {n}, {2 * n}, ... held out -> {len(out['valid'][0])} "
                  f"pairs; train: {len(out['train'][0])} pairs", flush=True)
        for split in SPLITS:
            for lang, lines in zip(langs, out.get(split) or
                                   [read_lines(work / f"{split}.tok.{lang}") for lang in langs]):
                write_lines(work / f"{split}.clean.{lang}", lines)

    steps.run("extract", f"{corpus} {src}-{tgt} raw_dir={raw_dir}", extract)
    steps.run("tokenize", f"lowercase={recipe.lowercase} aggressive={recipe.aggressive} "
              f"normalize={recipe.normalize}",
              lambda: tokenize_files(work, given, langs, recipe.lowercase, recipe.aggressive,
                                     recipe.normalize, workers))
    steps.run("clean", f"max_len={max_len} ratio={ratio} valid_every={recipe.valid_every}", clean)
    steps.run("bpe", f"merges={merges}", lambda: joint_bpe_files(work, "clean", langs, merges))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 for data errors)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", choices=sorted(RECIPES))
    parser.add_argument("--raw-dir", type=Path, help="read the archives here, do not download")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--tgt", required=True)
    parser.add_argument("--bpe-merges", type=int, required=True)
    parser.add_argument("--max-len", type=int, required=True)
    parser.add_argument("--ratio", type=float, default=1.5)
    parser.add_argument("--no-verify", action="store_true", help="skip checksums (warns)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        prepare(args.corpus, args.raw_dir, args.work, args.src, args.tgt, args.bpe_merges,
                args.max_len, args.ratio, not args.no_verify, args.workers)
    except DataError as error:
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Corpus BLEU (sacrebleu) of a fairseq-generate output against a raw reference file.

    python scripts/bleu.py generate.txt --ref test.raw.en [--detok en]

Hypotheses are the ``D-`` lines (BPE removed by ``fairseq-generate --remove-bpe``), ordered by
sentence id; ``--detok LANG`` applies the sacremoses detokeniser first.  Prints the sacrebleu
signature and a final line ``BLEU = <score> (<n> sentences)``.
"""
import argparse
import re
import sys
from typing import Dict, List


def read_hypotheses(path: str, prefix: str = "D") -> List[str]:
    """Hypotheses of a fairseq-generate output ordered by sentence id (first one per id)."""
    pattern = re.compile(rf"^{prefix}-(\d+)\t[^\t]*\t?(.*)$")
    found: Dict[int, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = pattern.match(line.rstrip("\n"))
            if match:
                found.setdefault(int(match.group(1)), match.group(2))
    missing = sorted(set(range(len(found))) - set(found))
    if missing or not found:
        raise SystemExit(f"{path}: no {prefix}- lines" if not found else f"{path}: missing ids {missing[:10]}")
    return [found[i] for i in range(len(found))]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("generate_output")
    parser.add_argument("--ref", required=True, help="raw reference file, one sentence per line")
    parser.add_argument("--detok", metavar="LANG", help="sacremoses-detokenise hypotheses first")
    parser.add_argument("--prefix", default="D", choices=["D", "H"], help="which fairseq lines")
    args = parser.parse_args(argv)

    from sacrebleu.metrics import BLEU

    hyps = read_hypotheses(args.generate_output, args.prefix)
    with open(args.ref, encoding="utf-8") as f:
        refs = [line.rstrip("\n") for line in f]
    while refs and not refs[-1].strip():
        refs.pop()
    if len(refs) != len(hyps):
        raise SystemExit(f"{len(hyps)} hypotheses but {len(refs)} references in {args.ref}")
    if args.detok:
        from sacremoses import MosesDetokenizer

        detok = MosesDetokenizer(lang=args.detok)
        hyps = [detok.detokenize(h.split()) for h in hyps]
    metric = BLEU()
    score = metric.corpus_score(hyps, [refs])
    print(metric.get_signature())
    print(f"BLEU = {score.score:.2f} ({len(hyps)} sentences)")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Corpus BLEU (sacrebleu) of a fairseq-generate output against a raw reference file.

    python scripts/bleu.py generate.txt --ref test.raw.en [--detok en]

Hypotheses are the ``D-`` lines (BPE removed by ``fairseq-generate --remove-bpe``), the first of
each sentence id, ordered by id; ``--detok LANG`` applies the sacremoses detokeniser first.
Prints the sacrebleu signature and a final line ``BLEU = <score> (<n> sentences)``.
``scripts/score.py`` reports the other metrics (diversity, ROUGE-L, MBR curve) of the same file.
"""
import argparse
import sys
from typing import Optional, Sequence

import text_metrics as m


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("generate_output")
    parser.add_argument("--ref", required=True, help="raw reference file, one sentence per line")
    parser.add_argument("--detok", metavar="LANG", help="sacremoses-detokenise hypotheses first")
    parser.add_argument("--prefix", default="D", choices=["D", "H"], help="which fairseq lines")
    args = parser.parse_args(argv)
    try:
        hyps = [c[0] for c in m.read_generate(args.generate_output, args.prefix).candidates]
        refs = m.read_lines(args.ref)
        m.check_counts(hyps, refs, args.ref)
    except m.InputError as error:
        raise SystemExit(str(error)) from None
    if args.detok:
        hyps = m.detokenize(hyps, args.detok)
    score, signature = m.corpus_bleu(hyps, refs)
    print(signature)
    print(f"BLEU = {score:.2f} ({len(hyps)} sentences)")


if __name__ == "__main__":
    sys.exit(main())

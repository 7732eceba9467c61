#!/usr/bin/env python
"""Score diffusion outputs like DiffuSeq (Table 1) and SeqDiffuSeq (Fig. 3): quality, diversity, MBR.

    python scripts/score.py generate.txt [--ref test.raw.en --detok en] [--mbr-curve 1,3,5,10,20]
    python scripts/score.py --hyps samples.txt --candidates 5 --ref refs.txt [--json]

Input: a fairseq-generate output (``D-`` lines, or ``H-`` with ``--prefix H``: every line of an id
is one candidate, best first as the decoder ranked them, up to ``--nbest``; ``T-`` lines are the
references) or a plain file of ``--candidates K`` consecutive lines per source.  The best
(first) candidate of each source is its output.

- BLEU: sacrebleu corpus BLEU (signature printed) of the outputs, Moses-detokenised with
  ``--detok LANG``, against ``--ref`` (raw references) or else the ``T-`` lines.
- tok-BLEU: corpus BLEU of the outputs as printed against the ``T-`` lines, no tokenisation.
- The rest use whitespace tokens of the outputs as printed and of the ``T-`` lines (``--ref``
  where the file has none): sentence BLEU (NLTK, smoothing 4, DiffuSeq), ROUGE-L F (rouge-score),
  BERTScore F1 (only with ``--bertscore-model`` a local model directory), dist-1, average
  length; self-BLEU and div-4 over the candidates of each source (sources with two or more):
  all of them, or ``--diversity-samples N`` taken in a seeded random order (DiffuSeq: 3).
- ``--mbr-curve 1,3,5``: BLEU of MBR (sentence BLEU, as ``--candidate-selection bleu-mbr``) among
  n candidates per source, taken in a seeded random order (``--mbr-order given``: as listed).

Without references only dist-1, self-BLEU, div-4 and length are reported.  Empty hypotheses
score 0 and are left out of dist-1; a source with fewer than n candidates uses all it has.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Sequence

import text_metrics as m

ROWS = [
    ("bleu", "BLEU (sacrebleu)", "{:.2f}"),
    ("tok_bleu", "BLEU (tokenised)", "{:.2f}"),
    ("sentence_bleu", "sentence BLEU", "{:.4f}"),
    ("rouge_l", "ROUGE-L F", "{:.4f}"),
    ("bertscore_f1", "BERTScore F1", "{:.4f}"),
    ("dist_1", "dist-1", "{:.4f}"),
    ("self_bleu", "self-BLEU", "{:.4f}"),
    ("div_4", "div-4", "{:.4f}"),
    ("length", "avg length", "{:.2f}"),
    ("ref_length", "avg ref length", "{:.2f}"),
]


def evaluate(
    generations: m.Generations,
    raw_references: Optional[List[str]] = None,
    detok: Optional[str] = None,
    mbr_sizes: Sequence[int] = (),
    seed: Optional[int] = 0,
    bertscore_model: Optional[str] = None,
    bertscore_layers: Optional[int] = None,
    diversity_samples: Optional[int] = None,
) -> Dict[str, Any]:
    """Every metric of the module docstring, as a JSON-ready dict (``None``: not computable)."""
    candidates = generations.candidates
    outputs = [c[0] for c in candidates]
    if raw_references is not None:
        m.check_counts(outputs, raw_references, "--ref")
    refs = generations.references or raw_references
    counts = [len(c) for c in candidates]
    samples = candidates
    if diversity_samples is not None:
        samples = [order[:diversity_samples] for order in m.shuffled(candidates, seed)]
    several = [c for c in samples if len(c) > 1]
    empty = sum(not h.split() for h in outputs)
    report: Dict[str, Any] = {
        "sources": len(candidates),
        "candidates_per_source": {"min": min(counts), "max": max(counts)},
        "diversity_sources": len(several),
        "empty_outputs": empty,
        "metrics": {
            "dist_1": m.mean_defined([m.dist_n(h, 1) for h in outputs]),
            "self_bleu": m.mean_defined([m.self_bleu(c) for c in several]),
            "div_4": m.mean_defined([m.div_n(c, 4) for c in several]),
            "length": sum(len(h.split()) for h in outputs) / len(outputs),
        },
        "notes": [],
    }
    notes = report["notes"]
    if empty:
        notes.append(f"{empty} empty outputs: sentence metrics 0, left out of dist-1")
    if diversity_samples is not None:
        order = "random (seeded)" if seed is not None else "given"
        notes.append(f"self-BLEU and div-4 over the first {diversity_samples} candidates of each source in {order} order")
    if len(several) < len(candidates):
        notes.append(f"{len(candidates) - len(several)} sources with one candidate: left out of self-BLEU and div-4")
    if refs is None:
        notes.append("no references (no T- lines, no --ref): BLEU, ROUGE-L, BERTScore and MBR curve skipped")
        return report
    bleu_refs = raw_references or (m.detokenize(refs, detok) if detok else refs)
    bleu_hyps = m.detokenize(outputs, detok) if detok else outputs
    metrics = report["metrics"]
    metrics["bleu"], report["sacrebleu_signature"] = m.corpus_bleu(bleu_hyps, bleu_refs)
    metrics["tok_bleu"], _ = m.corpus_bleu(outputs, refs, tokenize="none")
    metrics["sentence_bleu"] = sum(m.sentence_bleu(h, r) for h, r in zip(outputs, refs)) / len(refs)
    metrics["rouge_l"] = sum(m.rouge_l(outputs, refs)) / len(refs)
    metrics["ref_length"] = sum(len(r.split()) for r in refs) / len(refs)
    if bertscore_model:
        metrics["bertscore_f1"] = m.bertscore(outputs, refs, bertscore_model, bertscore_layers)
    else:
        notes.append("BERTScore skipped: pass --bertscore-model DIR, a local model (nothing is downloaded)")
    if mbr_sizes:
        report["mbr_curve"] = m.mbr_curve(candidates, refs, mbr_sizes, seed)
        for point in report["mbr_curve"]:
            if point["short"]:
                notes.append(f"MBR n={point['n']}: {point['short']} sources have fewer candidates, all of theirs used")
    return report


def format_table(report: Dict[str, Any]) -> str:
    """The report as aligned text: the metrics, then the MBR curve and the notes."""
    counts = report["candidates_per_source"]
    lines = [
        f"sources {report['sources']}, candidates per source {counts['min']}..{counts['max']}"
        f" ({report['diversity_sources']} sources in self-BLEU / div-4)"
    ]
    if "sacrebleu_signature" in report:
        lines.append(f"sacrebleu {report['sacrebleu_signature']}")
    for key, label, fmt in ROWS:
        value = report["metrics"].get(key)
        lines.append(f"{label:<18}{'-' if value is None else fmt.format(value):>10}")
    if report.get("mbr_curve"):
        lines.append(f"{'MBR candidates':<18}{'tok. BLEU':>10}{'sent. BLEU':>12}")
        lines += [f"{p['n']:<18}{p['bleu']:>10.2f}{p['sentence_bleu']:>12.4f}" for p in report["mbr_curve"]]
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)


def sizes(text: str) -> List[int]:
    values = [int(v) for v in text.split(",")]
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"candidate counts must be >= 1, got {text}")
    return values


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("generate_output", nargs="?", help="fairseq-generate output")
    parser.add_argument("--hyps", help="plain hypotheses instead: --candidates consecutive lines per source")
    parser.add_argument("--candidates", type=int, default=1, help="lines per source in --hyps")
    parser.add_argument("--ref", help="references, one per line (raw text for sacrebleu)")
    parser.add_argument("--prefix", default="D", choices=["D", "H"], help="fairseq-generate lines to score")
    parser.add_argument("--detok", metavar="LANG", help="Moses-detokenise before sacrebleu")
    parser.add_argument("--mbr-curve", type=sizes, default=[], metavar="N,N,...", help="MBR candidate counts")
    parser.add_argument("--mbr-order", choices=["random", "given"], default="random",
                        help="candidate order of the MBR curve and --diversity-samples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random candidate order")
    parser.add_argument("--diversity-samples", type=int, metavar="N",
                        help="self-BLEU and div-4 over N candidates per source (default: all)")
    parser.add_argument("--bertscore-model", metavar="DIR", help="local Hugging Face model directory")
    parser.add_argument("--bertscore-layers", type=int, help="BERTScore layer (default: the last)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if (args.generate_output is None) == (args.hyps is None):
        parser.error("give a fairseq-generate output or --hyps, not both")
    if args.candidates < 1:
        parser.error(f"--candidates must be >= 1, got {args.candidates}")
    if args.diversity_samples is not None and args.diversity_samples < 2:
        parser.error(f"--diversity-samples must be >= 2, got {args.diversity_samples}")
    try:
        if args.hyps:
            generations = m.Generations(m.read_plain(args.hyps, args.candidates), None)
        else:
            generations = m.read_generate(args.generate_output, args.prefix)
        report = evaluate(
            generations,
            m.read_lines(args.ref) if args.ref else None,
            args.detok,
            args.mbr_curve,
            args.seed if args.mbr_order == "random" else None,
            args.bertscore_model,
            args.bertscore_layers,
            args.diversity_samples,
        )
    except m.InputError as error:
        raise SystemExit(f"score.py: {error}") from None
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return report


if __name__ == "__main__":
    main()

"""Quality and diversity metrics of the diffusion seq2seq papers (scripts/score.py), no fairseq.

DiffuSeq (§4.1, App. D.4) reports sentence-level smoothed BLEU-1..4 (NLTK), ROUGE-L, BERTScore,
dist-1, self-BLEU and div-4 over the samples of each source, and average length; SeqDiffuSeq
(§6.4, Fig. 3) plots SacreBLEU and div-4 against the number of MBR candidates.  Texts are
compared as whitespace-separated tokens; sentence-level values lie in [0, 1], corpus BLEU in
[0, 100] (sacrebleu).
"""
from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Dict, List, Optional, Sequence, Tuple

from sacrebleu.metrics import BLEU

import checkout  # noqa: F401  (the plugin from this checkout when not installed)


class InputError(ValueError):
    """Unusable input (missing ids, count mismatch, missing model path): reported, not traced."""


@dataclass
class Generations:
    """Candidates of every source, best first, and the references (``None``: not in the file)."""

    candidates: List[List[str]]
    references: Optional[List[str]]


def read_generate(path: str, prefix: str = "D") -> Generations:
    """Parse a fairseq-generate output: every ``{prefix}-`` line of an id is one of its candidates
    (printed best first, up to ``--nbest``), ``T-`` lines are the references."""
    hypothesis = re.compile(rf"^{prefix}-(\d+)\t[^\t]*\t?(.*)$")
    target = re.compile(r"^T-(\d+)\t(.*)$")
    candidates: Dict[int, List[str]] = {}
    references: Dict[int, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if match := hypothesis.match(line):
                candidates.setdefault(int(match.group(1)), []).append(match.group(2))
            elif match := target.match(line):
                references[int(match.group(1))] = match.group(2)
    if not candidates:
        raise InputError(f"{path}: no {prefix}- lines")
    missing = sorted(set(range(len(candidates))) - set(candidates))
    if missing:
        raise InputError(f"{path}: missing ids {missing[:10]}")
    ids = range(len(candidates))
    if references and set(references) != set(ids):
        raise InputError(f"{path}: T- lines for {len(references)} of {len(candidates)} sources")
    return Generations([candidates[i] for i in ids], [references[i] for i in ids] if references else None)


def read_lines(path: str) -> List[str]:
    """One text per line; trailing empty lines are dropped."""
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def read_plain(hyps: str, candidates_per_source: int = 1) -> List[List[str]]:
    """A hypothesis file of ``candidates_per_source`` consecutive lines per source."""
    lines = read_lines(hyps)
    if not lines or len(lines) % candidates_per_source:
        raise InputError(f"{hyps}: {len(lines)} lines is not a positive multiple of --candidates {candidates_per_source}")
    return [lines[i : i + candidates_per_source] for i in range(0, len(lines), candidates_per_source)]


def check_counts(hypotheses: Sequence, references: Sequence[str], where: str) -> None:
    if len(hypotheses) != len(references):
        raise InputError(f"{len(hypotheses)} hypotheses but {len(references)} references in {where}")


def detokenize(texts: Sequence[str], lang: str) -> List[str]:
    from sacremoses import MosesDetokenizer

    detok = MosesDetokenizer(lang=lang)
    return [detok.detokenize(text.split()) for text in texts]


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: Optional[str] = None) -> Tuple[float, str]:
    """sacrebleu corpus BLEU in [0, 100] and its signature (``tokenize="none"``: tokenised BLEU)."""
    metric = BLEU(tokenize=tokenize, force=tokenize == "none")  # tokenised input: no 13a warning
    return metric.corpus_score(list(hypotheses), [list(references)]).score, str(metric.get_signature())


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """DiffuSeq's sentence BLEU: NLTK ``sentence_bleu`` with uniform BLEU-1..4 weights and Chen &
    Cherry's smoothing method 4 (short hypotheses get smaller pseudo-counts); empty scores 0."""
    from nltk.translate.bleu_score import SmoothingFunction  # only here: bleu.py needs sacrebleu alone
    from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu

    return float(nltk_sentence_bleu([reference.split()], hypothesis.split(), smoothing_function=SmoothingFunction().method4))


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> List[float]:
    """ROUGE-L F-measure per pair (``rouge-score``: lower-cased alphanumeric tokens, no stemming)."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"], use_stemmer=False)
    return [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references)]


def ngrams(tokens: Sequence[str], n: int) -> List[Tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_ratio(grams: Sequence[Tuple[str, ...]]) -> Optional[float]:
    """Distinct over total n-grams; ``None`` when there are none."""
    return len(set(grams)) / len(grams) if grams else None


def dist_n(text: str, n: int = 1) -> Optional[float]:
    """Intra-sentence diversity: distinct n-grams of one text over its n-grams (dist-1 for n=1)."""
    return distinct_ratio(ngrams(text.split(), n))


def div_n(candidates: Sequence[str], n: int = 4) -> Optional[float]:
    """Inter-sentence diversity (Deshpande et al.): distinct n-grams pooled over a source's
    candidates over their total; ``None`` when no candidate has n tokens."""
    return distinct_ratio([gram for text in candidates for gram in ngrams(text.split(), n)])


def self_bleu(candidates: Sequence[str]) -> Optional[float]:
    """Mean sentence BLEU of each candidate against each later one (pairs i < j, candidate i as the
    hypothesis); ``None`` for fewer than two candidates."""
    pairs = [sentence_bleu(a, b) for i, a in enumerate(candidates) for b in candidates[i + 1 :]]
    return mean(pairs) if pairs else None


def mbr_select(candidates: Sequence[str]) -> str:
    """The candidate with the highest mean sentence BLEU against the others (ties: the first),
    the decoder's ``--candidate-selection bleu-mbr`` rule applied to whitespace tokens, with uniform
    weights (the text has no length probabilities: ``--length-score-weight 0``)."""
    # imported here: the package loads fairseq's registrations (seconds), which the other
    # metrics do not need
    from diffusion_plugin.diffusion.selection import mbr_utilities

    utilities = mbr_utilities([text.split() for text in candidates])
    return candidates[max(range(len(candidates)), key=lambda i: (utilities[i], -i))]


def shuffled(candidates: Sequence[Sequence[str]], seed: Optional[int]) -> List[List[str]]:
    """Each source's candidates in a seeded random order (``None``: as given)."""
    rng = random.Random(seed)
    return [rng.sample(list(c), len(c)) if seed is not None else list(c) for c in candidates]


def mbr_curve(
    candidates: Sequence[Sequence[str]],
    references: Sequence[str],
    sizes: Sequence[int],
    seed: Optional[int] = 0,
) -> List[Dict[str, float]]:
    """Tokenised corpus BLEU and mean sentence BLEU of MBR over the first n candidates of each
    source, for each n.

    ``seed``: candidates are first put in a seeded random order per source (fairseq-generate
    prints them ranked, so its first n are not n independent draws); ``None`` keeps the given
    order.  MBR ties go to the earlier candidate of that order.  A source with fewer than n
    candidates uses all of them (counted in ``short``).
    """
    orders = shuffled(candidates, seed)
    curve = []
    for n in sizes:
        chosen = [mbr_select(order[:n]) for order in orders]
        curve.append(
            {
                "n": n,
                "bleu": corpus_bleu(chosen, references, tokenize="none")[0],
                "sentence_bleu": mean(sentence_bleu(h, r) for h, r in zip(chosen, references)),
                "short": sum(len(order) < n for order in orders),
            }
        )
    return curve


def bertscore(hypotheses: Sequence[str], references: Sequence[str], model_path: str, num_layers: Optional[int] = None) -> float:
    """Mean BERTScore F1 with a local Hugging Face model directory (nothing is downloaded);
    ``num_layers`` defaults to the model's last layer (``num_hidden_layers`` of its config)."""
    config = Path(model_path) / "config.json"
    if not config.is_file():
        raise InputError(
            f"--bertscore-model {model_path}: not a local model directory (no config.json). "
            "BERTScore is computed only with a model already on disk (DiffuSeq uses "
            "microsoft/deberta-xlarge-mnli, layer 40); nothing is downloaded"
        )
    try:
        from bert_score import score
    except ImportError as error:
        raise InputError(f"BERTScore needs the bert-score package: pip install -e '.[bertscore]' ({error})") from error
    layers = num_layers or json.loads(config.read_text(encoding="utf-8"))["num_hidden_layers"]
    _, _, f1 = score(list(hypotheses), list(references), model_type=str(model_path), num_layers=layers)
    return float(f1.mean())


def mean_defined(values: Sequence[Optional[float]]) -> Optional[float]:
    defined = [v for v in values if v is not None]
    return mean(defined) if defined else None

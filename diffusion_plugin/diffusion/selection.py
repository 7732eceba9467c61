"""Choosing among the b1·b2 candidates of one source (Difformer §3.3, DiffuSeq §3 MBR)."""
from __future__ import annotations

import math
from collections import Counter
from typing import List, Optional, Sequence


def ngram_counts(tokens: Sequence[int], order: int) -> Counter:
    return Counter(tuple(tokens[i : i + order]) for i in range(len(tokens) - order + 1))


def add_one_sentence_bleu(hypothesis: Sequence[int], reference: Sequence[int], max_order: int = 4) -> float:
    """Sentence BLEU in [0, 1] with add-one smoothing of the n > 1 precisions (Lin & Och 2004).

    BLEU = BP · exp(mean_n log p_n),  p_1 = m_1 / h_1,  p_n = (m_n + 1) / (h_n + 1) for n > 1,
    BP = min(1, exp(1 − r / h)).  Empty hypotheses score 0.
    """
    if not hypothesis:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_order + 1):
        hyp, ref = ngram_counts(hypothesis, n), ngram_counts(reference, n)
        matches = sum(min(count, ref[gram]) for gram, count in hyp.items())
        total = max(len(hypothesis) - n + 1, 0)
        smooth = 0 if n == 1 else 1
        if matches + smooth == 0:
            return 0.0
        log_precision += math.log((matches + smooth) / (total + smooth))
    brevity = min(0.0, 1.0 - len(reference) / len(hypothesis))
    return math.exp(brevity + log_precision / max_order)


def mbr_utilities(candidates: Sequence[Sequence[int]], weights: Optional[Sequence[float]] = None) -> List[float]:
    """The MBR utility of each candidate: its expected BLEU when the reference is drawn from the
    candidates with probabilities ∝ w (uniform without ``weights``; w >= 0, not all 0),
    u_i = Σ_j w_j BLEU(c_i, c_j) / Σ_j w_j over every j, i included.  With uniform weights this
    ranks as the mean BLEU against the others; with p(n|x)-weights a candidate's own probability
    counts, as it does in the expectation."""
    w = [1.0] * len(candidates) if weights is None else list(weights)
    total = sum(w)
    return [
        sum(w[j] * add_one_sentence_bleu(c, other) for j, other in enumerate(candidates) if w[j]) / total
        for c in candidates
    ]

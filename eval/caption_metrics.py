"""CIDEr-D for CoMM's image-to-text task, our own implementation of the published definition.

CIDEr-D (Vedantam, Zitnick & Parikh, CVPR 2015, as coco-caption's ``cider_scorer.py`` computes
it): for n = 1..4, each sentence is a vector of n-gram counts weighted by
``idf = log(N) - log(max(1, df))``, where ``df`` counts the images whose *reference set*
contains the n-gram and N is the number of images; the candidate's clipped similarity to a
reference is ``sum_g min(c_g, r_g) * r_g / (|c| |r|)`` (zero when either norm is zero), times the
length penalty ``exp(-(len_c - len_r)^2 / (2 * 6^2))``. An image's score is the mean over n and
over its references, times 10; the corpus score is the mean over images.

Tokenisation: lower case, runs of letters and digits (coco-caption runs the Stanford PTB
tokenizer, a Java program; punctuation is dropped either way, contractions may split
differently).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

__all__ = ["cider_d", "tokenize"]

_N = 4
_SIGMA = 6.0


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def _ngrams(words: Sequence[str]) -> list[Counter[tuple[str, ...]]]:
    return [
        Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        for n in range(1, _N + 1)
    ]


def _vector(
    counts: list[Counter[tuple[str, ...]]], df: Mapping[tuple[str, ...], int], log_n: float
) -> tuple[list[dict[tuple[str, ...], float]], list[float]]:
    vecs, norms = [], []
    for counter in counts:
        vec = {g: tf * (log_n - math.log(max(1.0, df.get(g, 0)))) for g, tf in counter.items()}
        vecs.append(vec)
        norms.append(math.sqrt(sum(v * v for v in vec.values())))
    return vecs, norms


def cider_d(candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> float:
    """Corpus CIDEr-D of ``candidates`` (id → caption) against ``references`` (id → captions).

    Raises:
        ValueError: ids differ, or an image has no reference.
    """
    if set(candidates) != set(references):
        raise ValueError("candidates and references must have the same ids")
    if not candidates:
        raise ValueError("CIDEr-D needs at least one image")
    refs = {i: [tokenize(r) for r in references[i]] for i in references}
    if any(not r for r in refs.values()):
        raise ValueError("every image needs at least one reference caption")
    df: Counter[tuple[str, ...]] = Counter()
    for sentences in refs.values():
        df.update({g for s in sentences for counter in _ngrams(s) for g in counter})
    log_n = math.log(float(len(refs)))
    scores = []
    for image, caption in candidates.items():
        words = tokenize(caption)
        hyp, hyp_norm = _vector(_ngrams(words), df, log_n)
        total = 0.0
        for ref_words in refs[image]:
            ref, ref_norm = _vector(_ngrams(ref_words), df, log_n)
            penalty = math.exp(-((len(words) - len(ref_words)) ** 2) / (2 * _SIGMA**2))
            per_n = []
            for n in range(_N):
                value = sum(
                    min(v, ref[n].get(g, 0.0)) * ref[n].get(g, 0.0) for g, v in hyp[n].items()
                )
                if hyp_norm[n] != 0 and ref_norm[n] != 0:
                    value /= hyp_norm[n] * ref_norm[n]
                per_n.append(value * penalty)
            total += sum(per_n) / _N
        scores.append(10.0 * total / len(refs[image]))
    return sum(scores) / len(scores)

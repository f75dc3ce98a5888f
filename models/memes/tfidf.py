"""The TF-IDF + logistic-regression part of an ensembled encoder student (inference side).

``mmagents finetune meme --select cv`` may choose, by cross-validation on the training split, to
average the frozen-encoder head's calibrated probability with a TF-IDF baseline's
(:mod:`mmagents.finetune.meme_select`). The baseline is stored as JSON in the student folder's
``frozen_head.json`` (vocabulary, IDF, weights, Platt calibration): no pickle, no scikit-learn.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["Tfidf", "TfidfPart", "meme_text"]


def meme_text(text: str, caption: str) -> str:
    """What the TF-IDF baseline reads of a meme."""
    return f"{text} {caption}"


class Tfidf:
    """Word 1–2-gram TF-IDF (sublinear TF, smooth IDF, L2 rows), sklearn's default tokenisation."""

    _token = re.compile(r"(?u)\b\w\w+\b")

    def __init__(self, vocabulary: dict[str, int] | None = None, idf: Any = None) -> None:
        self.vocabulary = vocabulary or {}
        self.idf = np.asarray(idf if idf is not None else [], dtype=np.float64)

    @classmethod
    def _terms(cls, text: str) -> list[str]:
        words = cls._token.findall(text.lower())
        return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]

    def fit(self, texts: Sequence[str]) -> Tfidf:
        """Learn the vocabulary and IDF of ``texts``."""
        df: dict[str, int] = {}
        for text in texts:
            for term in set(self._terms(text)):
                df[term] = df.get(term, 0) + 1
        self.vocabulary = {term: i for i, term in enumerate(sorted(df))}
        n = len(texts)
        self.idf = np.array([math.log((1 + n) / (1 + df[t])) + 1 for t in sorted(df)])
        return self

    def transform(self, texts: Sequence[str]) -> Any:
        """CSR matrix of ``texts`` (terms outside the vocabulary ignored)."""
        from scipy.sparse import csr_matrix

        rows, cols, vals = [], [], []
        for row, text in enumerate(texts):
            counts: dict[int, int] = {}
            for term in self._terms(text):
                col = self.vocabulary.get(term)
                if col is not None:
                    counts[col] = counts.get(col, 0) + 1
            if not counts:
                continue
            keys = np.fromiter(counts, dtype=int)
            weights = (1 + np.log(np.fromiter(counts.values(), dtype=float))) * self.idf[keys]
            weights /= np.linalg.norm(weights)
            rows += [row] * len(keys)
            cols += keys.tolist()
            vals += weights.tolist()
        return csr_matrix((vals, (rows, cols)), shape=(len(texts), len(self.vocabulary)))


class TfidfPart:
    """A stored TF-IDF + LR baseline: ``σ(a · (tfidf(x)·w + b) + c)``.

    Args:
        record: The ``tfidf`` object of ``frozen_head.json``.
    """

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.vectorizer = Tfidf(dict(record["vocabulary"]), record["idf"])
        self.w = np.asarray(record["w"], dtype=np.float64)
        self.b = float(record["b"])
        self.platt = (float(record["platt"][0]), float(record["platt"][1]))

    def proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probability of harmful."""
        scores = self.vectorizer.transform(list(texts)) @ self.w + self.b
        z = self.platt[0] * scores + self.platt[1]
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))))

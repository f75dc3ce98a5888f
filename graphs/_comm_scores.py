"""Scorer metrics shared by the ``comm`` and ``comm-filter`` graphs.

Both graphs measure the same two things with the scorer role, so a threshold means the same in
generation (regenerate a weak step) and in filtering (drop a weak document):

* **alignment** of an image with its step: the cosine of their scorer features
  (``score / logit_scale``; the scorer's features are L2-normalised);
* **consistency** of an image with the images of the steps before it: the mean cosine of its image
  features with theirs (``None`` for the first image). A document's image-sequence consistency is
  the mean of its steps' values.

Cosines rather than logits keep thresholds independent of the scorer's ``logit_scale``; they still
depend on the scorer (CLIP cosines of matching pairs sit around 0.25–0.35), so the defaults live
in the ``[graphs.comm]`` / ``[graphs.comm_filter]`` config sections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from mmagents.models.base import Scorer

__all__ = ["SequenceScores", "alignment", "consistency", "cosine", "score_sequence", "step_text"]


def step_text(title: str, text: str) -> str:
    """The text an image of a step is compared with."""
    title, text = title.strip(), text.strip()
    return f"{title}: {text}" if title and text else title or text


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Dot product of unit vectors, clipped to [-1, 1] (float32 rounding can pass 1)."""
    return float(np.clip(a @ b, -1.0, 1.0))


def alignment(scorer: Scorer, images: list[Image.Image], texts: list[str]) -> list[float]:
    """Cosine of each image with the text at the same position."""
    if not images:
        return []
    feats_i = scorer.embed_images(images)
    feats_t = scorer.embed_texts(texts)
    return [cosine(i, t) for i, t in zip(feats_i, feats_t, strict=True)]


def consistency(previous: np.ndarray | None, features: np.ndarray) -> float | None:
    """Mean cosine of ``features`` (one image, shape ``(d,)``) with the ``previous`` images.

    Returns ``None`` when there is no previous image.
    """
    if previous is None or len(previous) == 0:
        return None
    return float(np.mean(np.clip(previous @ features, -1.0, 1.0)))


@dataclass(frozen=True)
class SequenceScores:
    """Per-step and mean scores of one image sequence (steps without an image are skipped)."""

    alignment: list[float | None]
    consistency: list[float | None]

    @property
    def mean_alignment(self) -> float | None:
        """Mean alignment over the steps that have an image."""
        return _mean(self.alignment)

    @property
    def mean_consistency(self) -> float | None:
        """Mean consistency over the steps that have a previous image."""
        return _mean(self.consistency)


def score_sequence(
    scorer: Scorer, images: list[Image.Image | None], texts: list[str]
) -> SequenceScores:
    """Alignment and consistency of every step of a document (``None`` where there is no image)."""
    present = [i for i, im in enumerate(images) if im is not None]
    aligned: list[float | None] = [None] * len(images)
    consistent: list[float | None] = [None] * len(images)
    if not present:
        return SequenceScores(aligned, consistent)
    kept = [im for im in images if im is not None]
    feats_i = scorer.embed_images(kept)
    feats_t = scorer.embed_texts([texts[i] for i in present])
    for row, step in enumerate(present):
        aligned[step] = cosine(feats_i[row], feats_t[row])
        consistent[step] = consistency(feats_i[:row], feats_i[row])
    return SequenceScores(aligned, consistent)


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None

"""Spatial evidence for ``recode``: the drawn-boxes image and the geometric spatial scorer.

RECODE rates a relation's spatial cues ("the subject is above the object") against an image of the
two boxes alone: the subject box filled red, the object box filled green, half transparent, on a
white canvas spanning their union (:func:`draw_spatial_image`). A CLIP-like scorer can read that
image; the offline ``label_space`` scorer cannot (it sees ImageNet classes, not boxes), so offline
the spatial cues are scored by :class:`GeometricSpatialScorer` instead: the box geometry is turned
into canonical phrases ("the red box is above the green box", "the red box is much smaller than the
green box") with thresholds taken from the paper's layout judge, and each cue scores its best
phrase by sentence-embedding similarity (the ``embed`` role).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "GeometricSpatialScorer",
    "SpatialMatch",
    "draw_spatial_image",
    "spatial_phrases",
    "validate_box",
]

Box = Sequence[float]

SUBJECT_WORD = "the red box"
OBJECT_WORD = "the green box"


def validate_box(box: Any, what: str) -> list[float]:
    """``box`` as ``[x1, y1, x2, y2]`` floats with positive width and height.

    Raises:
        ValueError: not four numbers, or an empty box.
    """
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"{what} box must be four numbers x1 y1 x2 y2, got {box!r}") from None
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"{what} box {box!r} is empty: need x2 > x1 and y2 > y1")
    return [x1, y1, x2, y2]


def _size(box: Box) -> tuple[float, float]:
    return float(box[2] - box[0]), float(box[3] - box[1])


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def _intersection(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def _direction(sub: Box, obj: Box) -> str | None:
    """Where the subject lies relative to the object (the paper's 8 sectors; image y points down)."""
    (sx, sy), (ox, oy) = _centre(sub), _centre(obj)
    dx, dy = sx - ox, oy - sy  # dy > 0: subject is higher in the picture
    norm = math.hypot(dx, dy)
    if norm < 1e-9:
        return None
    cos = dx / norm
    vertical = "above" if dy > 0 else "below"
    horizontal = "to the right of" if dx > 0 else "to the left of"
    if abs(cos) >= 0.8:
        return horizontal
    if abs(cos) <= 0.2:
        return vertical
    return f"{vertical} and {horizontal}"


def _contact_phrases(sub: Box, obj: Box) -> list[str]:
    """Overlap, containment, resting on top, touching, nearness or distance."""
    s_area, o_area = _size(sub)[0] * _size(sub)[1], _size(obj)[0] * _size(obj)[1]
    inter = _intersection(sub, obj)
    s, o = SUBJECT_WORD, OBJECT_WORD
    out: list[str] = []
    if inter >= 0.9 * s_area:
        out.append(f"{s} is inside {o}")
    elif inter >= 0.9 * o_area:
        out.append(f"{s} contains {o}")
    elif inter > 0:
        out.append(f"{s} overlaps {o}")
    sw, sh = _size(sub)
    ow, oh = _size(obj)
    horizontal_overlap = min(sub[2], obj[2]) - max(sub[0], obj[0]) > 0
    bottom_on_top = obj[1] - 0.1 * sh <= sub[3] <= obj[1] + 0.35 * oh
    if horizontal_overlap and bottom_on_top and _centre(sub)[1] < _centre(obj)[1]:
        out.append(f"{s} rests on top of {o}")
    gap = max(
        max(sub[0], obj[0]) - min(sub[2], obj[2]), max(sub[1], obj[1]) - min(sub[3], obj[3]), 0.0
    )
    scale = (sw + ow + sh + oh) / 4.0
    if inter == 0 and gap <= 0.05 * scale:
        out.append(f"{s} touches {o}")
    elif inter == 0 and gap <= 0.5 * scale:
        out.append(f"{s} is next to {o}")
    elif gap > 1.5 * scale:
        out.append(f"{s} is far from {o}")
    return out


def _size_phrases(sub: Box, obj: Box) -> list[str]:
    sw, sh = _size(sub)
    ow, oh = _size(obj)
    ratio = (sw * sh) / (ow * oh)
    s, o = SUBJECT_WORD, OBJECT_WORD
    if ratio > 4:
        out = [f"{s} is much larger than {o}"]
    elif ratio > 1.5:
        out = [f"{s} is larger than {o}"]
    elif ratio < 0.25:
        out = [f"{s} is much smaller than {o}"]
    elif ratio < 1 / 1.5:
        out = [f"{s} is smaller than {o}"]
    else:
        out = [f"{s} is about the same size as {o}"]
    for word, (w, h) in ((s, (sw, sh)), (o, (ow, oh))):  # the paper's shape classes
        if w <= 0.25 * h:
            out.append(f"{word} is tall and narrow")
        elif h <= 0.25 * w:
            out.append(f"{word} is wide and flat")
    return out


def spatial_phrases(sub: Box, obj: Box) -> list[str]:
    """Canonical phrases describing the layout of the subject (red) and object (green) boxes."""
    direction = _direction(sub, obj)
    head = [f"{SUBJECT_WORD} is {direction} {OBJECT_WORD}"] if direction else []
    return head + _contact_phrases(sub, obj) + _size_phrases(sub, obj)


def draw_spatial_image(sub: Box, obj: Box, size: int = 224, margin: float = 0.08) -> Image.Image:
    """The paper's spatial image: the union of the boxes, object green then subject red, 50% alpha.

    The union keeps its aspect ratio and is centred on a white ``size`` x ``size`` canvas.
    """
    from PIL import Image, ImageDraw

    ux1, uy1 = min(sub[0], obj[0]), min(sub[1], obj[1])
    ux2, uy2 = max(sub[2], obj[2]), max(sub[3], obj[3])
    inner = size * (1 - 2 * margin)
    scale = inner / max(ux2 - ux1, uy2 - uy1)
    off_x = (size - (ux2 - ux1) * scale) / 2
    off_y = (size - (uy2 - uy1) * scale) / 2

    def place(box: Box) -> tuple[float, float, float, float]:
        return (
            off_x + (box[0] - ux1) * scale,
            off_y + (box[1] - uy1) * scale,
            off_x + (box[2] - ux1) * scale,
            off_y + (box[3] - uy1) * scale,
        )

    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    for box, colour in ((obj, (0, 160, 0, 128)), (sub, (220, 0, 0, 128))):
        layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        ImageDraw.Draw(layer).rectangle(place(box), fill=colour, outline=(*colour[:3], 255))
        canvas = Image.alpha_composite(canvas, layer)
    return canvas.convert("RGB")


@dataclass(frozen=True)
class SpatialMatch:
    """A spatial cue's geometric score: its best-matching layout phrase and their similarity."""

    cue: str
    phrase: str
    similarity: float


class GeometricSpatialScorer:
    """Scores spatial cues against box geometry (for scorers that cannot read drawn boxes).

    Each cue's similarity is the cosine between its sentence embedding and that of its best
    layout phrase; the spatial score is ``scale`` times the mean over cues (``scale`` defaults to
    100, CLIP's logit scale, so the term is on the same footing as the crop scores).

    Args:
        embed: Callable ``texts -> (n, d)`` L2-normalised embeddings (the ``embed`` role, usually
            through the on-disk feature cache).
        scale: Multiplier of the mean cosine.
    """

    name = "geometric_spatial"

    def __init__(self, embed: Any, scale: float = 100.0) -> None:
        self.embed = embed
        self.scale = scale

    def score(self, sub: Box, obj: Box, cues: Sequence[str]) -> tuple[float, list[SpatialMatch]]:
        """``(score, matches)`` of ``cues`` for the layout of ``sub`` and ``obj``."""
        phrases = spatial_phrases(sub, obj)
        vectors = np.asarray(self.embed([*cues, *phrases]), dtype=np.float32)
        similarity = vectors[: len(cues)] @ vectors[len(cues) :].T
        best = similarity.argmax(axis=1)
        matches = [
            SpatialMatch(cue, phrases[j], float(similarity[i, j]))
            for i, (cue, j) in enumerate(zip(cues, best, strict=True))
        ]
        return self.scale * float(np.mean([m.similarity for m in matches])), matches

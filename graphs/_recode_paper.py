"""RECODE's paper protocol as pure functions (Li et al., NeurIPS 2023; HKUST-LongGroup/RECODE).

Each rule below is worked out from the reference code and cited ``file:line`` beside it; the
``recode`` graph's default protocol keeps mmagents' own scoring (see ``graphs/recode.py``). The
reference runs PredCls with ``scripts/infer.sh`` (one command line), whose settings fix the
branches taken in ``maskrcnn_benchmark/utils/clip.py``: ``BOTH True`` (name term + cue term),
``GPT_WEIGHT True`` (the LLM's weights), ``SPATIAL True``, ``FILTER_CAT True`` with ``PAIR True``
(per-(label, predicate) tables), ``WEIGHT_SUM 2.0``, ``TAU 1.0``, ``PHOTO False``, ``CP False``,
``TEST_GROUP semantic``.

Per (subject, object) pair the reference scores a vector over all predicate ids (0 = background)::

    score[p] = (S_name[p] + O_name[p] + 2.0 · (w_s·S[p] + w_o·O[p] + 0.6·w_p·P[p])) / 1.0

* ``S_name`` / ``O_name``: 100·cos of the subject / object crop against the bare predicate name
  (``PHOTO False``: the text is just ``"{predicate}"``), zero outside the semantic subset and for
  filtered predicates (clip.py:161-172, 209-248);
* ``S`` / ``O``: mean 100·cos of the crop against the rewritten subject / object cues of the key
  ``{predicate}_{subject category}_{object category}`` with categories human / animal / product
  (clip.py:252-258, 260-323, 411-424);
* ``P``: the spatial score of the pair's canonical layout (one of 1,944, binned from its boxes by
  ``tools/judge_spatial.py``) against the key's spatial cues (``tools/generate_spatial_logits.py``);
* ``w``: the LLM's weights normalised one after another (clip.py:392-395, see
  :func:`normalise_weights`), times ``WEIGHT_SUM`` (clip.py:406);
* a predicate whose key has no cues, or whose subject or object table says "not valid", scores 0
  (clip.py:355, :388, 240-246).

Pairs are ranked across the image by the softmax of that vector (background included), top
non-background class per pair (``relation_head/inference.py``, ``PostProcessor.forward``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmagents.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "ANIMAL",
    "GQA200_SEMANTIC",
    "HUMAN",
    "LAYOUT_NAMES",
    "VG150_SEMANTIC",
    "FilterTables",
    "canonical_layout",
    "cue_key",
    "draw_layout",
    "layout_name",
    "normalise_weights",
    "object_cue_text",
    "pair_rank_score",
    "paper_category",
    "predicate_scores",
    "read_filter_tables",
    "spatial_cue_text",
    "subject_cue_text",
]

#: VG150's 24 "semantic" predicate ids (defaults.py:607 ``_C.SEMANTIC_GROUP``).
VG150_SEMANTIC: tuple[int, ...] = (
    11, 12, 13, 14, 15, 18, 19, 21, 24, 25, 26, 28, 34, 35, 37, 38, 39, 40, 41, 42, 44, 45, 46, 47,
)  # fmt: skip
#: GQA200's 26 "semantic" predicate ids (defaults.py:609 ``_C.GQA_SEMANTIC_GROUP``).
GQA200_SEMANTIC: tuple[int, ...] = (
    8, 15, 18, 19, 21, 22, 23, 24, 25, 26, 27, 28, 30, 33, 34, 35, 36, 37, 38, 39, 40, 42, 43, 44,
    46, 47,
)  # fmt: skip
#: The reference's human labels (defaults.py:616 ``_C.HUMAN``).
HUMAN: frozenset[str] = frozenset(
    [
        "boy",
        "child",
        "girl",
        "guy",
        "kid",
        "lady",
        "man",
        "men",
        "people",
        "person",
        "player",
        "skier",
        "woman",
    ]
)
#: The reference's animal labels (defaults.py:615 ``_C.ANIMAL``).
ANIMAL: frozenset[str] = frozenset(
    [
        "animal",
        "bear",
        "bird",
        "cat",
        "cow",
        "dog",
        "elephant",
        "giraffe",
        "horse",
        "sheep",
        "zebra",
    ]
)

#: The reference's factors under scripts/infer.sh:1 (WEIGHT_SUM 2.0, TAU 1.0) and clip.py:425.
WEIGHT_SUM = 2.0
TAU = 1.0
SPATIAL_FACTOR = 0.6


def paper_category(label: str) -> str:
    """``human``, ``animal`` or ``product``: exact membership, nothing else (clip.py:252-258)."""
    if label in HUMAN:
        return "human"
    if label in ANIMAL:
        return "animal"
    return "product"


def cue_key(predicate: str, subject: str, obj: str) -> str:
    """The cue / weight key ``{predicate}_{subject cat}_{object cat}`` (clip.py:349, :263)."""
    return f"{predicate}_{paper_category(subject)}_{paper_category(obj)}"


def normalise_weights(weights: Sequence[float], *, spatial: bool = True) -> tuple[float, ...]:
    """The LLM's (subject, object, spatial) weights as the reference normalises them.

    The reference divides each weight in place by the sum *of the partly normalised vector*
    plus 1e-3, one after the other (clip.py:392-395), so the result does not sum to exactly 1;
    we reproduce that, once per key. (The reference also mutates its weight table in place, so
    a key seen again is normalised again: scores then depend on the order pairs come in. We do
    not reproduce that order dependence; see docs/reproduce.md.)
    """
    w = [float(v) for v in weights]
    if len(w) != 3:
        raise ValueError(f"RECODE weights are (subject, object, spatial), got {weights!r}")
    if not spatial:  # clip.py:397-399
        w[2] = 0.0
        w[0] = w[0] / (sum(w) + 1e-3)
        w[1] = w[1] / (sum(w) + 1e-3)
        return tuple(w)
    for i in range(3):
        w[i] = w[i] / (sum(w) + 1e-3)
    return tuple(w)


def _tidy(prompt: str) -> str:
    # clip.py:277-280: strip, newlines to '.', then every '.' removed.
    return prompt.strip().replace(" \n", ".").replace("\n", ".").replace(".", "")


def subject_cue_text(cue: str, subject: str) -> str:
    """A subject cue as the reference writes it (clip.py:275-283): plain ``str.replace``."""
    text = _tidy(f"{subject}, {cue}")
    text = text.replace("subject", subject)
    return text.replace("the object", "something").replace("object", "something")


def object_cue_text(cue: str, obj: str) -> str:
    """An object cue as the reference writes it (clip.py:308-315)."""
    text = _tidy(f"{obj}, {cue}")
    text = text.replace("object", obj)
    return text.replace("the subject", "something").replace("subject", "something")


def spatial_cue_text(cue: str, key: str) -> str:
    """A spatial cue about the layout image (tools/generate_spatial_logits.py, prompt loop).

    Lower-cased, "subject" → "red box", "object" → "green box", then the key's subject and object
    *category* words (human / animal / product) likewise, then ``str.capitalize``.
    """
    _predicate, sub_cat, obj_cat = key.rsplit("_", 2)
    text = _tidy(cue).lower()
    text = text.replace("subject", "red box").replace("object", "green box")
    text = text.replace(sub_cat, "red box").replace(obj_cat, "green box")
    return text.capitalize()


def usable_cues(cues: Sequence[str]) -> list[str]:
    """Cues longer than one character (the reference drops the others: clip.py:271-273)."""
    return [c for c in cues if len(c) > 1]


# -- spatial layouts -----------------------------------------------------------------------------

_SIZES = ("big", "mid", "small")
_SHAPES = ("horizontal", "vertical", "central")
_POSITIONS = (
    "top", "bottom", "left", "right", "top_left", "top_right", "bottom_left", "bottom_right",
)  # fmt: skip

#: The 3·3·3·3·3·8 = 1,944 canonical layout names, in the reference's drawing order
#: (tools/draw_img.py, main loop: sub size, sub shape, obj size, obj shape, distance, position).
LAYOUT_NAMES: tuple[str, ...] = tuple(
    f"{ss}_{sh}_{os_}_{oh}_{pos}_{dist}"
    for ss in _SIZES
    for sh in _SHAPES
    for os_ in _SIZES
    for oh in _SHAPES
    for dist in _SIZES
    for pos in _POSITIONS
)


def _judge_box(w: float, h: float, union_area: float) -> tuple[str, str]:
    # tools/judge_spatial.py judge_bbox: size against the union area, shape by aspect ratio.
    area = w * h
    size = "small" if area <= 0.05 * union_area else "mid" if area <= 0.5 * union_area else "big"
    if w <= h * 0.25:
        shape = "vertical"
    elif h <= w * 0.25:
        shape = "horizontal"
    else:
        shape = "central"
    return size, shape


def _judge_position(
    off_x: float, off_y: float, sw: float, sh: float, ow: float, oh: float
) -> tuple[str, str]:
    """tools/judge_spatial.py judge_position; (off_x, off_y) = object centre − subject centre."""
    norm = math.hypot(off_x, off_y)
    # The reference divides by the norm without a guard: equal centres give NaN, every
    # comparison is False and the pair falls through to the last branch (top_right / bottom_right).
    cos = off_x / norm if norm > 0 else math.nan
    ax, ay = abs(off_x), abs(off_y)

    def axis(gap: float, a: float, b: float) -> str:
        return "big" if gap > a + b else "small" if gap < abs(a / 2 - b / 2) else "mid"

    if cos >= 0.8:
        return "left", axis(ax, sw, ow)
    if cos <= -0.8:
        return "right", axis(ax, sw, ow)
    if -0.2 <= cos <= 0.2:
        return ("bottom" if off_y < 0 else "top"), axis(ay, sh, oh)
    side = "left" if 0.2 < cos < 0.8 else "right"
    position = f"{'bottom' if off_y < 0 else 'top'}_{side}"
    if ax > sw + ow and ay > sh + oh:
        distance = "big"
    elif ax < abs(sw / 2 + ow / 2) and ay < abs(sh / 2 - oh / 2):  # '+' in x, '-' in y: as written
        distance = "small"
    else:
        distance = "mid"
    return position, distance


def layout_name(subject_box: Sequence[float], object_box: Sequence[float]) -> str:
    """The canonical layout a (subject, object) box pair is binned into (tools/judge_spatial.py).

    Boxes are ``[x1, y1, x2, y2]``. Widths and heights are maskrcnn_benchmark's ``xywh``
    (``x2 - x1 + 1``, the BoxList pixel convention); the union size is ``max - min`` without the
    +1, as the reference computes it.
    """
    s = [float(v) for v in subject_box]
    o = [float(v) for v in object_box]
    union_w = max(s[2], o[2]) - min(s[0], o[0])
    union_h = max(s[3], o[3]) - min(s[1], o[1])
    union_area = union_w * union_h
    off_x = (o[2] + o[0]) / 2.0 - (s[2] + s[0]) / 2.0
    off_y = (o[3] + o[1]) / 2.0 - (s[3] + s[1]) / 2.0
    sw, sh = s[2] - s[0] + 1, s[3] - s[1] + 1
    ow, oh = o[2] - o[0] + 1, o[3] - o[1] + 1
    sub_size, sub_shape = _judge_box(sw, sh, union_area)
    obj_size, obj_shape = _judge_box(ow, oh, union_area)
    position, distance = _judge_position(off_x, off_y, sw, sh, ow, oh)
    return f"{sub_size}_{sub_shape}_{obj_size}_{obj_shape}_{position}_{distance}"


@dataclass(frozen=True)
class Layout:
    """A canonical layout in the unit square (y up, as matplotlib draws it), subject and object."""

    subject: tuple[float, float, float, float]  # x, y, w, h
    object: tuple[float, float, float, float]


def canonical_layout(name: str) -> Layout:
    """The boxes of a canonical layout (tools/draw_img.py generate_box / generate_union).

    Raises:
        ValueError: ``name`` is not one of :data:`LAYOUT_NAMES`.
    """
    parts = name.split("_")
    if name not in LAYOUT_NAMES:
        raise ValueError(f"not a RECODE layout name: {name!r}")
    sub_size, sub_shape, obj_size, obj_shape = parts[:4]
    position, distance = "_".join(parts[4:-1]), parts[-1]

    def box(size: str, shape: str) -> tuple[float, float]:
        w, h = {"horizontal": (1, 0.25), "vertical": (0.25, 1), "central": (0.5, 0.5)}[shape]
        d = {"big": 1, "mid": 0.5, "small": 0.1}[size]
        return w * d, h * d

    sw, sh = box(sub_size, sub_shape)
    ow, oh = box(obj_size, obj_shape)
    factor = {"big": 2.0, "mid": 0.6, "small": 0.1}[distance]
    dw, dh = (sw + ow) / 2 * factor, (sh + oh) / 2 * factor
    sx, sy = -sw / 2, -sh / 2
    dx = {"left": dw, "right": -dw}.get(position.split("_")[-1], 0.0)
    dy = {"top": -dh, "bottom": dh}.get(position.split("_")[0], 0.0)
    ox, oy = -ow / 2 + dx, -oh / 2 + dy
    ux, uy = min(sx, ox), min(sy, oy)
    uw = max(sx + sw, ox + ow) - ux
    uh = max(sy + sh, oy + oh) - uy
    # Normalised to the union, as draw_union divides by the union size.
    return Layout(
        subject=((sx - ux) / uw, (sy - uy) / uh, sw / uw, sh / uh),
        object=((ox - ux) / uw, (oy - uy) / uh, ow / uw, oh / uh),
    )


def draw_layout(name: str) -> Image.Image:
    """The layout image: a 300x200 figure, axes where matplotlib puts them, green object under a
    red subject, both half transparent (tools/draw_img.py draw_union).

    Drawn with PIL, not matplotlib: the geometry follows the reference (figure 3x2 in at 100
    dpi, default subplot margins, unit axes, y up), the pixels are not byte-identical.
    """
    from PIL import Image, ImageDraw

    width, height = 300, 200
    left, right, bottom, top = 0.125 * width, 0.9 * width, 0.11 * height, 0.88 * height
    canvas = Image.new("RGB", (width, height), "white")
    layout = canonical_layout(name)

    def px(x: float, y: float) -> tuple[float, float]:
        return left + x * (right - left), height - (bottom + y * (top - bottom))

    for (x, y, w, h), colour in ((layout.object, (0, 128, 0)), (layout.subject, (255, 0, 0))):
        overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        x1, y2 = px(x, y)
        x2, y1 = px(x + w, y + h)
        ImageDraw.Draw(overlay).rectangle([x1, y1, x2, y2], fill=(*colour, 128))
        canvas = Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
    ImageDraw.Draw(canvas).rectangle([left, height - top, right, height - bottom], outline="black")
    return canvas


# -- the filter tables ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterTables:
    """RECODE's per-(label, predicate) validity tables (``sub_valid_tris`` / ``obj_valid_tris``).

    Keys are ``"{label}_{predicate}"`` (clip.py:386-387); a missing key is an error in the
    reference (a ``KeyError``), here it counts as valid so a partial table filters only what it
    names. ``None`` tables mean no filtering.
    """

    subject: Mapping[str, bool] | None = None
    object: Mapping[str, bool] | None = None

    def valid(self, subject: str, obj: str, predicate: str) -> bool:
        """Both the subject's and the object's table allow ``predicate`` (clip.py:244, :388)."""
        ok_s = self.subject is None or bool(self.subject.get(f"{subject}_{predicate}", True))
        ok_o = self.object is None or bool(self.object.get(f"{obj}_{predicate}", True))
        return ok_s and ok_o


def read_filter_tables(path: str) -> FilterTables:
    """The tables of a JSON file ``{"subject": {...}, "object": {...}}`` (either may be absent).

    Raises:
        ConfigError: unreadable file or not that shape.
    """
    try:
        data = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
        subject, object_ = data.get("subject"), data.get("object")
        if not all(t is None or isinstance(t, dict) for t in (subject, object_)):
            raise ValueError("tables must be objects")
    except (OSError, ValueError, AttributeError) as err:
        raise ConfigError(f"[graphs.recode] filter_tables {path!r}: {err}") from None
    return FilterTables(subject=subject, object=object_)


# -- the score -----------------------------------------------------------------------------------


def predicate_scores(
    *,
    num_classes: int,
    semantic: Sequence[int],
    names: Mapping[int, str],
    subject: str,
    obj: str,
    subject_name: Mapping[int, float],
    object_name: Mapping[int, float],
    cue_scores: Mapping[int, tuple[float, float, float]],
    weights: Mapping[int, Sequence[float]],
    tables: FilterTables,
) -> np.ndarray:
    """The reference's score vector of one pair over predicate ids ``0..num_classes-1``.

    Args:
        num_classes: Predicate ids including background 0 (VG150: 51, GQA200: 101).
        semantic: The evaluated predicate ids (:data:`VG150_SEMANTIC` / :data:`GQA200_SEMANTIC`).
        names: Predicate id → name.
        subject / obj: The pair's labels.
        subject_name / object_name: id → 100·cos of the crop against the bare predicate name.
        cue_scores: id → (S, O, P) for predicates whose key has cues and weights; an id absent
            here scores 0 in the cue term (clip.py:355, :388).
        weights: id → the key's raw LLM weights (subject, object, spatial).
        tables: The per-(label, predicate) filter tables.

    Returns:
        ``(num_classes,)`` float scores; zero outside ``semantic`` and for filtered predicates.
    """
    out = np.zeros(num_classes, dtype=np.float64)
    for pid in semantic:
        if not tables.valid(subject, obj, names[pid]):
            continue  # filtered: both terms zero (clip.py:244-246, :388)
        value = subject_name.get(pid, 0.0) + object_name.get(pid, 0.0)
        if pid in cue_scores:
            s, o, p = cue_scores[pid]
            ws, wo, wp = (WEIGHT_SUM * w for w in normalise_weights(weights[pid]))
            value += ws * s + wo * o + wp * p * SPATIAL_FACTOR
        out[pid] = value / TAU
    return out


def pair_rank_score(scores: np.ndarray) -> tuple[int, float]:
    """The pair's predicted predicate and ranking score (relation_head/inference.py).

    Softmax over the full vector (background and zeroed classes included), then the best
    non-background class: its id and its probability, by which pairs are sorted.
    """
    if len(scores) < 2:
        raise ValueError("need the background class and at least one predicate")
    shifted = np.exp(scores - scores.max())
    probs = shifted / shifted.sum()
    best = int(np.argmax(probs[1:])) + 1
    return best, float(probs[best])


def mean_cue_score(region: Any, texts: Any, scale: float = 100.0) -> float:
    """Mean ``scale · cos`` of one L2-normalised region feature against text features."""
    return float(np.mean(scale * (np.asarray(texts) @ np.asarray(region))))

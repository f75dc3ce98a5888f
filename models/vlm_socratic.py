"""vlm backend ``socratic``: a VLM made of parts (Socratic Models, Zeng et al. 2022).

There is no offline vision-language model, so this backend composes what exists:

* ``caption`` is deterministic, no LLM: the scorer role's best ImageNet labels, the text the OCR
  role reads, the dominant colours, and (each one a setting) the faces MTCNN finds
  (``facenet-pytorch``'s bundled weights), the colours of the region the classifier looked at for
  its top label (its class activation map), and brightness / sky cues for day or night. It is
  written as sentences that say where each part came from ("An image an ImageNet classifier labels
  as tiger cat (39%) ...", "Face detector (MTCNN): ...").
* ``answer`` gives that description and the question to the llm role (prompt
  ``prompts/socratic_answerer.yaml``), which replies in one short sentence.

With the ``label_space`` scorer the labels are EfficientNet-Lite0's top classes; with a CLIP-like
scorer (``open_clip``, ``hf_clip``) they are zero-shot scores over the same 1000 class names.
Descriptions are cached per image, so several questions about one image cost one description.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mmagents.errors import BackendError, BackendUnavailableError
from mmagents.models.base import feature_scores, load_once

if TYPE_CHECKING:
    from PIL import Image

    from mmagents._config import Config

__all__ = ["LightCues", "SocraticDescription", "SocraticVLM", "dominant_colours", "light_cues"]

#: Reference colours for naming quantised clusters (nearest in RGB).
_COLOUR_NAMES: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "dark grey": (70, 70, 70),
    "grey": (128, 128, 128),
    "light grey": (190, 190, 190),
    "white": (245, 245, 245),
    "red": (200, 30, 30),
    "dark red": (110, 20, 25),
    "orange": (235, 130, 30),
    "yellow": (235, 215, 50),
    "beige": (215, 195, 155),
    "brown": (125, 80, 40),
    "dark brown": (65, 40, 20),
    "green": (50, 150, 50),
    "dark green": (25, 70, 30),
    "olive": (120, 120, 40),
    "teal": (30, 120, 120),
    "light blue": (135, 185, 230),
    "blue": (40, 80, 200),
    "navy": (20, 30, 80),
    "purple": (115, 50, 145),
    "pink": (235, 150, 180),
}


def dominant_colours(image: Image.Image, k: int = 3, clusters: int = 8) -> list[tuple[str, float]]:
    """The ``k`` most covered colour names of ``image`` with their share of the pixels.

    Median-cut quantisation of a thumbnail into ``clusters`` colours (deterministic), each named by
    the nearest reference colour; shares of clusters with the same name add up.
    """
    from PIL import Image as PILImage

    thumb = image.convert("RGB").resize((64, 64), PILImage.Resampling.BILINEAR)
    quantised = thumb.quantize(colors=clusters, method=PILImage.Quantize.MEDIANCUT)
    palette = quantised.getpalette() or []
    counts = quantised.getcolors() or []
    total = sum(count for count, _ in counts)
    names = list(_COLOUR_NAMES)
    refs = np.array(list(_COLOUR_NAMES.values()), dtype=np.float32)
    shares: dict[str, float] = {}
    for count, index in counts:
        start = 3 * int(index)  # type: ignore[arg-type]  # a palette index for "P" images
        rgb = np.array(palette[start : start + 3], dtype=np.float32)
        name = names[int(np.argmin(((refs - rgb) ** 2).sum(axis=1)))]
        shares[name] = shares.get(name, 0.0) + count / total
    ranked = sorted(shares.items(), key=lambda item: (-item[1], item[0]))
    return [(name, round(share, 3)) for name, share in ranked[:k]]


def _name_pixels(pixels: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The ``k`` most common reference-colour names of ``(n, 3)`` RGB pixels, with shares."""
    refs = np.array(list(_COLOUR_NAMES.values()), dtype=np.float32)
    nearest = np.argmin(((pixels[:, None, :] - refs[None]) ** 2).sum(axis=2), axis=1)
    counts = np.bincount(nearest, minlength=len(refs)) / max(len(pixels), 1)
    names = list(_COLOUR_NAMES)
    ranked = sorted(
        ((names[i], float(c)) for i, c in enumerate(counts) if c > 0), key=lambda x: -x[1]
    )
    return [(name, round(share, 3)) for name, share in ranked[:k]]


@dataclass(frozen=True)
class LightCues:
    """Pixel statistics that hint at the time of day (heuristics, and labelled as such).

    Attributes:
        brightness: Mean luminance in ``[0, 1]``.
        sky: Share of the top third's pixels that are sky-blue (bright, blue above red and green).
    """

    brightness: float
    sky: float

    def sentence(self) -> str:
        level = (
            "bright" if self.brightness > 0.55 else "dark" if self.brightness < 0.25 else "medium"
        )
        text = f"Light (pixel statistics): {level} (mean brightness {self.brightness:.2f})"
        if self.sky >= 0.15:
            text += (
                f", {self.sky:.0%} of the top third is sky blue, which suggests daytime outdoors"
            )
        elif self.brightness < 0.25:
            text += ", which suggests night or a dark room"
        return text + "."


def light_cues(image: Image.Image) -> LightCues:
    """Brightness and the share of sky-blue pixels in the top third of ``image``."""
    from PIL import Image as PILImage

    thumb = np.asarray(
        image.convert("RGB").resize((96, 96), PILImage.Resampling.BILINEAR), dtype=np.float32
    )
    luminance = thumb @ np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0
    top = thumb[:32].reshape(-1, 3)
    r, g, b = top[:, 0], top[:, 1], top[:, 2]
    sky = (b > r + 20) & (b >= g) & (b > 110)
    return LightCues(round(float(luminance.mean()), 3), round(float(sky.mean()), 3))


def _load_mtcnn() -> Any:
    try:
        from facenet_pytorch import MTCNN
    except ImportError as exc:
        raise BackendUnavailableError(
            "face detection needs facenet-pytorch (its MTCNN weights ship in the wheel): "
            "pip install --no-deps facenet-pytorch==2.6.0"
        ) from exc
    return MTCNN(keep_all=True, device="cpu")


def count_faces(image: Image.Image, threshold: float = 0.9) -> int:
    """Faces MTCNN (facenet-pytorch's bundled weights) detects with at least ``threshold``."""
    detector = load_once(("mtcnn", "facenet-pytorch"), _load_mtcnn)
    rgb = image.convert("RGB")
    scale = 640 / max(rgb.size)
    if scale < 1:  # MTCNN's pyramid is slow on large photos; faces stay findable at 640 px
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)))
    _, probs = detector.detect(rgb)
    return 0 if probs is None else int(sum(p is not None and p >= threshold for p in probs))


def _join(items: list[str], last: str = "and") -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


@dataclass(frozen=True)
class SocraticDescription:
    """What the vision parts saw in one image.

    Attributes:
        labels: ``(label, probability)`` of the top ImageNet classes, best first.
        text: The OCR lines, top to bottom.
        colours: ``(colour name, share of pixels)``, most covered first.
    """

    labels: list[tuple[str, float]]
    text: list[str]
    colours: list[tuple[str, float]]
    faces: int | None = None
    region: tuple[str, list[tuple[str, float]]] | None = None
    light: LightCues | None = None

    def sentence(self) -> str:
        """One readable sentence that names its sources (classifier labels, OCR, colours)."""
        labels = _join([f"{name} ({p:.0%})" for name, p in self.labels], "or")
        unsure = "possibly " if not self.labels or self.labels[0][1] < 0.2 else ""
        parts = [f"An image an ImageNet classifier labels as {unsure}{labels}"]
        if self.text:
            shown = " / ".join(self.text)
            parts.append(f'showing the text "{shown[:300]}"')
        else:
            parts.append("with no readable text")
        if self.colours:
            parts.append(f"mostly {_join([name for name, _ in self.colours])}")
        sentences = [", ".join(parts) + "."]
        if self.region is not None and self.region[1]:
            label, colours = self.region
            shown = _join([name for name, _ in colours])
            sentences.append(
                f"Colours where the classifier sees the {label} (class activation map): {shown}."
            )
        if self.faces is not None:
            found = "no faces" if self.faces == 0 else f"{self.faces} face{'s' * (self.faces > 1)}"
            sentences.append(f"Face detector (MTCNN): {found}.")
        if self.light is not None:
            sentences.append(self.light.sentence())
        return " ".join(sentences)


class SocraticVLM:
    """Caption and VQA from classifier labels, OCR and colours, plus an LLM (the ``VLM`` protocol).

    Args:
        top_k: How many ImageNet labels the description lists.
        colours: How many dominant colours it lists.
        read_text: Run the OCR role (turn off for photos without text, to save time).
        max_answer_chars: Answers are cut to their first sentence and at most this length.
        scorer: Injected scorer (default: the scorer role of ``config``).
        ocr: Injected OCR backend (default: the ocr role of ``config``).
        llm: Injected chat model (default: the llm role of ``config``).
        config: Configuration the default roles come from (default: the environment's).
        cache_size: How many image descriptions to remember.
        faces: Count faces with MTCNN (needs facenet-pytorch).
        region_colours: Name the colours of the region the classifier looked at for its top label
            (needs a scorer with ``class_activation_map``, as ``label_space`` has).
        light: Add brightness and sky-blue cues for day or night.
    """

    name = "socratic"

    def __init__(
        self,
        top_k: int = 3,
        colours: int = 3,
        read_text: bool = True,
        max_answer_chars: int = 200,
        scorer: Any = None,
        ocr: Any = None,
        llm: Any = None,
        config: Config | None = None,
        cache_size: int = 64,
        faces: bool = True,
        region_colours: bool = True,
        light: bool = True,
    ) -> None:
        self.top_k = top_k
        self.colours = colours
        self.read_text = read_text
        self.max_answer_chars = max_answer_chars
        self.config = config
        self.cache_size = cache_size
        self.faces = faces
        self.region_colours = region_colours
        self.light = light
        self._roles: dict[str, Any] = {"scorer": scorer, "ocr": ocr, "llm": llm}
        self._cache: OrderedDict[str, SocraticDescription] = OrderedDict()
        self._lock = threading.Lock()
        self._label_features: np.ndarray | None = None

    def _role(self, role: str) -> Any:
        if self._roles[role] is None:
            from mmagents.models import load_role

            self._roles[role] = load_role(role, self.config)
        return self._roles[role]

    # -- description -------------------------------------------------------------------------

    def labels(self, image: Image.Image) -> list[tuple[str, float]]:
        """The ``top_k`` ImageNet labels of ``image`` with probabilities, from the scorer role."""
        scorer = self._role("scorer")
        if hasattr(scorer, "top_labels"):
            return list(scorer.top_labels(image, self.top_k))
        # A CLIP-like scorer: zero-shot classification over the same class names. The protocol
        # guarantees score == logit_scale * img @ txt.T, so the 1000 text features are kept.
        from mmagents.models.scorer_label_space import imagenet_labels

        names = imagenet_labels()
        if self._label_features is None:
            self._label_features = scorer.embed_texts([f"a photo of a {n}." for n in names])
        logits = feature_scores(
            scorer.logit_scale, scorer.embed_images([image]), self._label_features
        )[0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        return [(names[i], float(probs[i])) for i in np.argsort(-probs)[: self.top_k]]

    def describe(self, image: Image.Image) -> SocraticDescription:
        """Labels, OCR text and colours of ``image`` (cached per image content)."""
        key = hashlib.sha1(
            f"{image.mode}{image.size}".encode() + image.tobytes(), usedforsecurity=False
        ).hexdigest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        text = [line.text for line in self._role("ocr").read(image)] if self.read_text else []
        description = SocraticDescription(
            labels=self.labels(image),
            text=text,
            colours=dominant_colours(image, self.colours) if self.colours else [],
            faces=count_faces(image) if self.faces else None,
            region=self._region(image) if self.region_colours else None,
            light=light_cues(image) if self.light else None,
        )
        with self._lock:
            self._cache[key] = description
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return description

    def _region(self, image: Image.Image) -> tuple[str, list[tuple[str, float]]] | None:
        """The top label and the colours of the pixels its class activation map marks (> 0.5)."""
        scorer = self._role("scorer")
        if not hasattr(scorer, "class_activation_map"):
            return None  # a CLIP-like scorer has no class map
        label, heat, crop = scorer.class_activation_map(image)
        pixels = np.asarray(crop, dtype=np.float32)[heat > 0.5]
        return (label, _name_pixels(pixels[::4], self.colours or 3)) if len(pixels) else None

    def caption(self, image: Image.Image) -> str:
        """A one-sentence description built from labels, OCR text and colours (no LLM)."""
        return self.describe(image).sentence()

    # -- answers -----------------------------------------------------------------------------

    def answer(self, image: Image.Image, question: str) -> str:
        """The llm role's one-sentence answer to ``question``, given only the description.

        Raises:
            BackendError: the LLM returned no text.
        """
        from mmagents.prompts import render_messages

        messages = render_messages(
            "socratic_answerer", "answer", description=self.caption(image), question=question
        )
        reply = self._role("llm").invoke(messages)
        answer = _first_sentence(_text_of(reply), self.max_answer_chars)
        if not answer:
            raise BackendError(f"the llm returned an empty answer to {question!r}")
        return answer


def _text_of(reply: Any) -> str:
    content = getattr(reply, "content", reply)
    if isinstance(content, list):
        content = " ".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content)
    return str(content)


def _first_sentence(text: str, limit: int) -> str:
    """The first non-empty line's first sentence, without an echoed "Answer:" prefix."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    if line.lower().startswith("answer:"):
        line = line[len("answer:") :].strip()
    line = line.strip('"').strip()
    return re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0][:limit].strip()

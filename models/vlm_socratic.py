"""vlm backend ``socratic``: a VLM made of parts (Socratic Models, Zeng et al. 2022).

There is no offline vision-language model, so this backend composes what exists:

* ``caption`` is deterministic, no LLM: the scorer role's best ImageNet labels, the text the OCR
  role reads, and the dominant colours, written as one sentence that says where each part came
  from ("An image an ImageNet classifier labels as tiger cat (39%) ...").
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

from mmagents.errors import BackendError
from mmagents.models.base import feature_scores

if TYPE_CHECKING:
    from PIL import Image

    from mmagents._config import Config

__all__ = ["SocraticDescription", "SocraticVLM", "dominant_colours"]

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
        return ", ".join(parts) + "."


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
    ) -> None:
        self.top_k = top_k
        self.colours = colours
        self.read_text = read_text
        self.max_answer_chars = max_answer_chars
        self.config = config
        self.cache_size = cache_size
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
        )
        with self._lock:
            self._cache[key] = description
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return description

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

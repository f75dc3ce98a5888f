"""The role protocols every backend implements.

A role is a small protocol; a backend implements exactly one role and imports its heavy library
lazily, on first use. Images cross these interfaces as ``PIL.Image.Image`` in RGB mode; tools and
graphs resolve handles to images through the ``ImageStore`` before calling a backend.

Two things every backend shares are written here once: :class:`ScorerBase` (the score matrix from
features, :func:`feature_scores`) and :func:`load_once` (weights loaded once per process).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "OCR",
    "VLM",
    "Embedder",
    "GeneratedImage",
    "ImageGenerator",
    "OcrLine",
    "Scorer",
    "ScorerBase",
    "feature_scores",
    "load_once",
    "working_side",
]

T = TypeVar("T")


def working_side(backend: Any) -> int | None:
    """The shorter image side ``backend`` needs at least, from its optional ``working_side``.

    A backend whose own preprocessing shrinks every image (a scorer resizing to 256 pixels, an
    endpoint VLM sending at most 1024) declares twice that side; the image store may then hand it
    a copy box-reduced by an integer factor (:meth:`~mmagents.images.ImageStore.get` with
    ``min_side``), which keeps at least twice the pixels the backend's own resize samples, instead
    of the full image. Backends that read fine detail (OCR) declare nothing: ``None``, full size.
    """
    side = getattr(backend, "working_side", None)
    return side if isinstance(side, int) and not isinstance(side, bool) and side > 0 else None


@runtime_checkable
class VLM(Protocol):
    """Vision-language model: captions an image and answers questions about it."""

    name: str

    def caption(self, image: Image.Image) -> str:
        """One-sentence description of the image."""
        ...

    def answer(self, image: Image.Image, question: str) -> str:
        """Short answer to ``question`` about the image."""
        ...


@runtime_checkable
class Scorer(Protocol):
    """Image–text scorer (CLIP-like): higher means a better match.

    ``score`` must equal ``logit_scale * embed_images(images) @ embed_texts(texts).T`` so callers can
    cache text features and score new images against them.
    """

    name: str
    logit_scale: float

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """Image features, shape ``(len(images), d)``, L2-normalised."""
        ...

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Text features, shape ``(len(texts), d)``, L2-normalised."""
        ...

    def score(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        """Score matrix of shape ``(len(images), len(texts))``."""
        ...


def feature_scores(
    logit_scale: float, image_features: np.ndarray, text_features: np.ndarray
) -> np.ndarray:
    """``logit_scale * image_features @ text_features.T``: the score matrix of the Scorer protocol.

    Callers that keep text features (the 1000 class prompts of a zero-shot classifier, a gallery's
    image features) score new inputs against them with this instead of calling ``score`` again.
    """
    scores: np.ndarray = float(logit_scale) * (image_features @ text_features.T)
    return scores


class ScorerBase(ABC):
    """The Scorer protocol's shared half: a backend writes only ``logit_scale`` and ``embed_*``.

    ``logit_scale`` may be a property (CLIP models read their learnt temperature from the weights)
    or a plain class or instance attribute.
    """

    name: str

    @property
    @abstractmethod
    def logit_scale(self) -> float:
        """The multiplier of cosine similarities (CLIP's learnt temperature; 100 for most)."""

    @abstractmethod
    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """Image features, shape ``(len(images), d)``, L2-normalised."""

    @abstractmethod
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Text features, shape ``(len(texts), d)``, L2-normalised."""

    def score(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        """Score matrix ``logit_scale * embed_images(images) @ embed_texts(texts).T``."""
        return feature_scores(self.logit_scale, self.embed_images(images), self.embed_texts(texts))


_WEIGHTS: dict[Hashable, Any] = {}
_KEY_LOCKS: dict[Hashable, threading.Lock] = {}
_GUARD = threading.Lock()


def load_once(key: Hashable, loader: Callable[[], T]) -> T:
    """The process-wide value for ``key``, calling ``loader`` the first time only.

    Holds loaded weights (models, engines, their fixed companions), never a configured backend or a
    wrapper around one, so sharing them between runs leaks no run's settings into another. Each key
    has its own lock: two threads asking for one model load it once, while a loader may itself
    load another key (the label-space scorer loads MiniLM) without deadlocking. A loader that
    raises stores nothing, so the next call tries again.

    Args:
        key: Identifies the weights: backend, model id or path, device, precision ...
        loader: Builds the value (imports the heavy library, reads the weights).
    """
    with _GUARD:
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        with _GUARD:
            if key in _WEIGHTS:
                return _WEIGHTS[key]  # type: ignore[no-any-return]
        value = loader()
        with _GUARD:
            _WEIGHTS[key] = value
        return value


@dataclass(frozen=True)
class OcrLine:
    """One line of text found in an image: its quadrilateral box, text and confidence."""

    box: list[tuple[float, float]]
    text: str
    confidence: float


@runtime_checkable
class OCR(Protocol):
    """Optical character recognition."""

    name: str

    def read(self, image: Image.Image) -> list[OcrLine]:
        """Text lines, top to bottom."""
        ...


@dataclass
class GeneratedImage:
    """An image from the imagegen role, with where it came from.

    Attributes:
        image: The image.
        prompt: The prompt it answers.
        provenance: ``"generated"`` for a generative model, ``"retrieved"`` for a stand-in that
            picks an existing image (never presented as generated).
        source: Model id or file path the image came from.
        meta: Backend-specific details (seed, steps, retrieval score, ...).
    """

    image: Image.Image
    prompt: str
    provenance: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ImageGenerator(Protocol):
    """Text-to-image generation (or an honest retrieval stand-in)."""

    name: str

    def generate(self, prompt: str, n: int = 1) -> list[GeneratedImage]:
        """``n`` candidate images for ``prompt``, best first."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Sentence embeddings."""

    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings, shape ``(len(texts), d)``, L2-normalised."""
        ...

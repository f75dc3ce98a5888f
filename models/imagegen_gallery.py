"""imagegen backend ``gallery``: the offline stand-in for image generation. It RETRIEVES, never generates.

No text-to-image weights ship offline, so this backend picks the existing images of a local folder
that the scorer role rates best for the prompt. Every result says so: ``provenance="retrieved"``,
``source`` is the file path, and ``meta["note"]`` repeats it, so no pipeline can mistake a
retrieved photo for a generated one. Image features are cached per file (path, size, mtime), so a
folder is embedded once per backend object (a run's runtime keeps one).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmagents.errors import BackendError, ConfigError
from mmagents.models.base import GeneratedImage, feature_scores

if TYPE_CHECKING:
    from PIL import Image

    from mmagents._config import Config

__all__ = ["IMAGE_SUFFIXES", "GalleryRetriever"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_NOTE = "retrieved from a local folder by image-text score; not generated"


class GalleryRetriever:
    """Retrieves the best-matching images of a folder (the ``ImageGenerator`` protocol).

    Args:
        folder: Folder of images (searched recursively); default: the bundled sample photos.
        scorer: A ``Scorer``; default: the scorer role of ``config``.
        config: Configuration for the scorer role and the sample folder; default: the environment's.
        batch_size: Images embedded per scorer call.
    """

    name = "gallery-retriever"

    def __init__(
        self,
        folder: str | None = None,
        scorer: Any = None,
        config: Config | None = None,
        batch_size: int = 16,
    ) -> None:
        self.folder = folder
        self.config = config
        self.batch_size = batch_size
        self._scorer = scorer
        self._features: dict[tuple[str, int, int], np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def scorer(self) -> Any:
        """The scorer that ranks the folder's images (loaded on first use)."""
        if self._scorer is None:
            from mmagents.models import load_role

            self._scorer = load_role("scorer", self.config)
        return self._scorer

    def image_paths(self) -> list[Path]:
        """The folder's image files, sorted.

        Raises:
            ConfigError: the folder does not exist or holds no images.
        """
        if self.folder:
            root = Path(self.folder).expanduser()
        else:
            from mmagents.samples import sample_paths

            root = next(iter(sample_paths(self.config).values())).parent
        if not root.is_dir():
            raise ConfigError(f"gallery folder {root} does not exist")
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ConfigError(
                f"gallery folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        return paths

    def generate(self, prompt: str, n: int = 1) -> list[GeneratedImage]:
        """The ``n`` folder images that best match ``prompt``, best first (fewer if the folder is
        smaller). Each is marked ``provenance="retrieved"`` with its file path as ``source``."""
        if n < 1:
            raise ValueError("n must be at least 1")
        paths, feats = self._folder_features(self.image_paths())
        text = self.scorer.embed_texts([prompt])
        scores = feature_scores(self.scorer.logit_scale, feats, text)[:, 0]
        order = np.argsort(-scores, kind="stable")[:n]
        return [
            GeneratedImage(
                image=_open(paths[i]),
                prompt=prompt,
                provenance="retrieved",
                source=str(paths[i]),
                meta={"score": round(float(scores[i]), 4), "rank": rank, "note": _NOTE},
            )
            for rank, i in enumerate(order)
        ]

    def _folder_features(self, paths: list[Path]) -> tuple[list[Path], np.ndarray]:
        keys = {}
        for path in paths:
            stat = path.stat()
            keys[path] = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            missing = [p for p in paths if keys[p] not in self._features]
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            loaded = [(p, im) for p in batch if (im := _open_or_skip(p)) is not None]
            if not loaded:
                continue
            feats = self.scorer.embed_images([im for _, im in loaded])
            with self._lock:
                for (path, _), feat in zip(loaded, feats, strict=True):
                    self._features[keys[path]] = np.asarray(feat, dtype=np.float32)
        with self._lock:
            usable = [p for p in paths if keys[p] in self._features]
            if not usable:
                raise BackendError("no image of the gallery folder could be read")
            return usable, np.stack([self._features[keys[p]] for p in usable])


def _open(path: Path) -> Image.Image:
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


def _open_or_skip(path: Path) -> Image.Image | None:
    from PIL import Image

    try:
        return _open(path)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # unreadable or too big
        log.warning("gallery: skipping unreadable image %s: %s", path, exc)
        return None

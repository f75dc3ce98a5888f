"""Frozen-encoder embeddings of memes and rationales, cached on disk per text and reused.

Cross-validating a recipe family on a frozen encoder needs each meme (and its teacher rationale)
encoded once per backbone, not once per fold or candidate. :class:`EmbeddingCache` keeps one
store per (encoder, kind, max length): a key per input (sha256 of the text or the (text, caption)
pair) and its vector. A call encodes only the inputs the store lacks and saves the store again
(written to a temporary file and renamed into place, so a kill leaves the previous store intact).
Any subset (a fold, a seeded split, another seed) then costs a lookup.

Meme vectors are the *unnormalised* mean-pooled last hidden states of the (text, caption)
sentence pair, exactly what :class:`mmagents.finetune.meme_encoder.EncoderStudent` computes at
inference, so a linear head fitted on them is served by that class unchanged. Rationale vectors
are L2-normalised (sentence-transformers' usage), as the encoder student's alignment targets.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmagents.finetune.meme_data import MemeExample

__all__ = ["EmbeddingCache", "default_cache_dir", "pair_key", "text_key"]


def default_cache_dir() -> Path:
    """``<home>/cache/embeddings`` (``home`` = ``$MMAGENTS_HOME``, default ``~/.mmagents``)."""
    home = os.environ.get("MMAGENTS_HOME") or Path.home() / ".mmagents"
    return Path(home).expanduser() / "cache" / "embeddings"


def text_key(text: str) -> str:
    """Cache key of one text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def pair_key(text: str, caption: str) -> str:
    """Cache key of a (text, caption) pair."""
    return hashlib.sha256(json.dumps([text, caption]).encode("utf-8")).hexdigest()[:32]


def _model_id(base: str) -> str:
    """A stable identity of an encoder folder (its path and config) or hub id."""
    path = Path(base).expanduser()
    config = path / "config.json"
    blob = str(path.resolve()) + (config.read_text() if config.is_file() else "")
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class EmbeddingCache:
    """Embeddings of one frozen encoder, computed on demand and kept on disk.

    Args:
        base: Encoder folder or hub id (a BERT-like ``AutoModel``).
        cache_dir: Where the stores live (default :func:`default_cache_dir`); ``None`` disk
            caching off (memory only).
        batch_size: Inputs per forward pass.
        log: Callable receiving plain progress lines (``None`` = silent).
    """

    def __init__(
        self,
        base: str,
        cache_dir: Path | None = None,
        *,
        batch_size: int = 32,
        log: Any = None,
    ) -> None:
        self.base = base
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.log = log
        self._model: Any = None
        self._tokenizer: Any = None
        self._stores: dict[str, dict[str, np.ndarray]] = {}
        #: Inputs actually encoded by this object (the rest came from the store).
        self.encoded = 0
        self.encode_seconds = 0.0

    # -- public -------------------------------------------------------------------------------
    def pairs(self, examples: Sequence[MemeExample], max_length: int = 64) -> np.ndarray:
        """Unnormalised mean-pooled (text, caption) vectors, one row per example."""
        keys = [pair_key(e.text, e.caption or "") for e in examples]
        inputs = {k: (e.text, e.caption or "") for k, e in zip(keys, examples, strict=True)}
        return self._get(f"pair-{max_length}", keys, inputs, max_length, normalise=False)

    def texts(self, texts: Sequence[str], max_length: int = 128) -> np.ndarray:
        """L2-normalised mean-pooled vectors of single texts (teacher rationales)."""
        keys = [text_key(t) for t in texts]
        inputs: dict[str, tuple[str, str | None]] = {
            k: (t, None) for k, t in zip(keys, texts, strict=True)
        }
        return self._get(f"text-{max_length}", keys, inputs, max_length, normalise=True)

    def release(self) -> None:
        """Drop the loaded encoder (the stores stay): the next miss loads it again."""
        self._model = self._tokenizer = None
        import gc

        gc.collect()

    # -- store ----------------------------------------------------------------------------------
    def _file(self, kind: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / _model_id(self.base) / f"{kind}.npz"

    def _store(self, kind: str) -> dict[str, np.ndarray]:
        if kind not in self._stores:
            store: dict[str, np.ndarray] = {}
            file = self._file(kind)
            if file is not None and file.is_file():
                with np.load(file) as data:
                    store = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
            self._stores[kind] = store
        return self._stores[kind]

    def _save(self, kind: str) -> None:
        file = self._file(kind)
        if file is None:
            return
        file.parent.mkdir(parents=True, exist_ok=True)
        store = self._store(kind)
        tmp = file.with_suffix(f".{os.getpid()}.tmp.npz")
        keys = np.array(list(store), dtype="U32")
        vectors = np.stack(list(store.values())) if store else np.zeros((0, 0), np.float32)
        np.savez(tmp, keys=keys, vectors=vectors)
        tmp.replace(file)

    def _get(
        self,
        kind: str,
        keys: list[str],
        inputs: dict[str, tuple[str, str | None]],
        max_length: int,
        *,
        normalise: bool,
    ) -> np.ndarray:
        store = self._store(kind)
        missing = [k for k in dict.fromkeys(keys) if k not in store]
        if missing:
            started = time.perf_counter()
            vectors = self._encode([inputs[k] for k in missing], max_length, normalise, kind)
            store.update(zip(missing, vectors, strict=True))
            self.encoded += len(missing)
            self.encode_seconds += time.perf_counter() - started
            self._save(kind)
        if not keys:
            return np.zeros((0, 0), np.float32)
        return np.stack([store[k] for k in keys]).astype(np.float32)

    # -- encoder ----------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.base)
            self._model = AutoModel.from_pretrained(self.base).eval()

    def _encode(
        self, items: list[tuple[str, str | None]], max_length: int, normalise: bool, kind: str
    ) -> np.ndarray:
        import torch

        from mmagents.models.memes.encoder import mean_pool

        self._load()
        order = np.argsort([len(a) + len(b or "") for a, b in items], kind="stable")
        hidden = int(self._model.config.hidden_size)
        out = np.zeros((len(items), hidden), np.float32)
        started, last = time.perf_counter(), time.perf_counter()
        with torch.no_grad():
            for start in range(0, len(items), self.batch_size):
                idx = order[start : start + self.batch_size].tolist()
                first = [items[i][0] for i in idx]
                second = [items[i][1] or "" for i in idx] if items[idx[0]][1] is not None else None
                batch = self._tokenizer(
                    first,
                    second,
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                pooled = mean_pool(self._model(**batch).last_hidden_state, batch["attention_mask"])
                if normalise:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.numpy()
                if self.log is not None and time.perf_counter() - last > 30:
                    last = time.perf_counter()
                    done = min(start + self.batch_size, len(items))
                    self.log(
                        f"embedding {kind}: {done}/{len(items)} "
                        f"({time.perf_counter() - started:.0f} s)"
                    )
        return out

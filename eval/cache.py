"""The model-call cache: one SQLite file (WAL mode) shared by runs, threads and processes.

Two doors lead into it:

* **LLM calls** go through :class:`LLMCallCache`, a ``langchain_core.caches.BaseCache`` whose key
  is the serialised messages plus LangChain's ``llm_string`` (model type, model parameters and
  bound kwargs such as ``response_format``), set as the ``cache`` of the run's own copy of the chat
  model.
* **Vision calls** (vlm, scorer, ocr, embed, imagegen) go through :class:`CachingBackend`, a proxy
  whose key is the backend name, its options, the method and the arguments, with images replaced
  by a hash of their pixels.

Both are attached by :func:`cache_wrap`, the ``wrap`` hook a run hands its runtime
(``Models(config, wrap=cache_wrap(store))``): only that runtime's backends are cached, and nothing
is registered process-wide.

Values are stored as tagged JSON (numpy arrays as ``.npy`` bytes, images as PNG), never pickles,
so a cache file cannot carry code. Editing a prompt changes the key, because the full prompt
text is in it; retraining a model *in place* (same path) does not: pass ``--no-cache`` then.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache

from mmagents._config import RoleConfig
from mmagents.errors import CacheError
from mmagents.tracing import note_cache

__all__ = [
    "CACHED_METHODS",
    "CachingBackend",
    "CallCache",
    "LLMCallCache",
    "cache_wrap",
    "decode_value",
    "encode_value",
]

#: role → the backend methods whose results are cached (everything else is forwarded untouched).
CACHED_METHODS: dict[str, frozenset[str]] = {
    "vlm": frozenset({"caption", "answer"}),
    "scorer": frozenset({"embed_images", "embed_texts", "score"}),
    "ocr": frozenset({"read"}),
    "embed": frozenset({"embed"}),
    "imagegen": frozenset({"generate"}),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


class Uncacheable(TypeError):
    """A value or argument the cache cannot encode; the call then runs uncached."""


#: how long opening the cache keeps retrying a lock held by another process (seconds)
_OPEN_RETRY_S = 60.0


def _prepare(conn: sqlite3.Connection) -> None:
    """Journal mode, sync level, busy timeout and schema for a new connection."""
    conn.execute("PRAGMA busy_timeout=60000")
    # Switching to WAL takes an exclusive lock and SQLite does not always call the busy handler
    # for it, so two processes opening a new cache at once can see "database is locked": only the
    # first open of a file switches (the mode is stored in the file), and callers retry.
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    if str(mode).lower() != "wal":
        conn.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: no fsync per commit, yet commits survive a killed process.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(_SCHEMA)


def _with_busy_retry(step: Callable[[], None], budget_s: float = _OPEN_RETRY_S) -> None:
    """Run ``step``, retrying with backoff while SQLite reports the file busy or locked."""
    deadline = time.monotonic() + budget_s
    delay = 0.01
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            message = str(exc).lower()
            transient = "locked" in message or "busy" in message
            if not transient or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


class CallCache:
    """A key → JSON value store in SQLite that counts hits and misses per kind.

    One connection per thread (sqlite3 connections are not shared across threads); WAL journaling
    lets several processes read while one writes, and ``busy_timeout`` makes writers wait their
    turn instead of failing.

    Args:
        path: The SQLite file (created with its folder when missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()
        self.uncacheable: Counter[str] = Counter()
        #: entries that could not be decoded (treated as misses and replaced)
        self.corrupt: Counter[str] = Counter()
        try:
            if self.path.is_dir():
                raise CacheError(
                    f"model-call cache {self.path} is a directory, not a file; "
                    "choose another with --cache, or pass --no-cache"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Create the schema now, so a bad file fails before the run starts, not mid-run.
            self._connection().execute("SELECT count(*) FROM calls").fetchone()
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise CacheError(
                f"cannot use the model-call cache {self.path}: {exc}; "
                "delete the file, choose another with --cache, or pass --no-cache"
            ) from None

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            try:
                _with_busy_retry(lambda: _prepare(conn))
            except BaseException:
                conn.close()
                raise
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def get(self, kind: str, key: str) -> str | None:
        """The stored value of ``key``, counting a hit or a miss for ``kind``."""
        row = self._connection().execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
        with self._lock:
            (self.hits if row else self.misses)[kind] += 1
        note_cache(row is not None)  # a traced call around this lookup records hit or miss
        return row[0] if row else None

    def put(self, kind: str, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (last writer wins)."""
        self._connection().execute(
            "INSERT OR REPLACE INTO calls (key, kind, value, created) VALUES (?, ?, ?, ?)",
            (key, kind, value, time.time()),
        )

    def note_corrupt(self, kind: str, key: str) -> None:
        """Count an entry that did not decode (it is then recomputed and replaced)."""
        with self._lock:
            self.corrupt[kind] += 1
            self.hits[kind] -= 1  # get() counted it as a hit; it is a miss
            self.misses[kind] += 1

    def note_uncacheable(self, kind: str) -> None:
        """Count a call that could not be cached (it ran normally)."""
        with self._lock:
            self.uncacheable[kind] += 1

    def stats(self) -> dict[str, Any]:
        """Hits, misses and uncacheable calls, in total and per kind (llm, vlm.caption, ...)."""
        with self._lock:
            kinds = sorted(set(self.hits) | set(self.misses) | set(self.uncacheable))
            return {
                "path": str(self.path),
                "hits": sum(self.hits.values()),
                "misses": sum(self.misses.values()),
                "uncacheable": sum(self.uncacheable.values()),
                "corrupt": sum(self.corrupt.values()),
                "by_kind": {
                    k: {
                        "hits": self.hits[k],
                        "misses": self.misses[k],
                        "uncacheable": self.uncacheable[k],
                    }
                    for k in kinds
                },
            }

    def clear(self) -> None:
        """Delete every stored call."""
        self._connection().execute("DELETE FROM calls")

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


# -- LLM calls --------------------------------------------------------------------------------


def _generation_to_json(generation: Any) -> dict[str, Any]:
    from langchain_core.messages import message_to_dict
    from langchain_core.outputs import ChatGeneration

    if isinstance(generation, ChatGeneration):
        return {"chat": message_to_dict(generation.message), "info": generation.generation_info}
    return {"text": generation.text, "info": generation.generation_info}


def _generation_from_json(data: dict[str, Any]) -> Any:
    from langchain_core.messages import messages_from_dict
    from langchain_core.outputs import ChatGeneration, Generation

    # Marked so a trace shows this generation came from the cache (LangChain reports none).
    info = {**(data.get("info") or {}), "mmagents_cache": "hit"}
    if "chat" in data:
        message = messages_from_dict([data["chat"]])[0]
        return ChatGeneration(message=message, generation_info=info)
    return Generation(text=data["text"], generation_info=info)


class LLMCallCache(BaseCache):
    """LangChain LLM cache backed by :class:`CallCache` (install with ``set_llm_cache``)."""

    def __init__(self, store: CallCache) -> None:
        self.store = store

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations of this prompt on this model, or ``None``."""
        key = _digest("llm", llm_string, prompt)
        raw = self.store.get("llm", key)
        if raw is None:
            return None
        try:
            return [_generation_from_json(g) for g in json.loads(raw)]
        except Exception:  # a bad entry is a miss: the call runs and update() replaces it
            self.store.note_corrupt("llm", key)
            return None

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store the generations of this prompt on this model."""
        value = json.dumps([_generation_to_json(g) for g in return_val])
        self.store.put("llm", _digest("llm", llm_string, prompt), value)

    def clear(self, **kwargs: Any) -> None:
        """Delete every stored call (LLM and vision alike: they share one file)."""
        self.store.clear()


# -- vision calls -----------------------------------------------------------------------------


def _image_digest(image: Any) -> str:
    return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()


def _key_part(value: Any) -> Any:
    """A JSON-able, deterministic stand-in for an argument (images and arrays by content hash)."""
    from PIL import Image

    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Image.Image):
        return {"image_sha256": _image_digest(value)}
    if isinstance(value, list | tuple):
        return [_key_part(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _key_part(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if type(value).__module__ == "numpy":
        import numpy as np

        array = np.ascontiguousarray(value)
        return {
            "array_sha256": hashlib.sha256(array.tobytes()).hexdigest(),
            "dtype": str(array.dtype),
            "shape": list(array.shape),
        }
    raise Uncacheable(f"cannot key an argument of type {type(value).__name__}")


def _allowed_dataclasses() -> dict[str, type]:
    from mmagents.models.base import GeneratedImage, OcrLine

    return {f"{t.__module__}:{t.__qualname__}": t for t in (OcrLine, GeneratedImage)}


def encode_value(value: Any) -> Any:
    """Encode a backend result as tagged JSON (see :func:`decode_value`).

    Raises:
        Uncacheable: a type outside strings, numbers, lists, tuples, dicts, numpy arrays, PIL
            images and the result dataclasses of ``mmagents.models.base``.
    """
    from PIL import Image

    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [encode_value(v) for v in value]}
    if isinstance(value, dict):
        return {"__dict__": [[encode_value(k), encode_value(v)] for k, v in value.items()]}
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return {"__image__": base64.b64encode(buffer.getvalue()).decode("ascii")}
    if type(value).__module__ == "numpy":
        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, np.asarray(value), allow_pickle=False)
        tag = "__ndarray__" if isinstance(value, np.ndarray) else "__npscalar__"
        return {tag: base64.b64encode(buffer.getvalue()).decode("ascii")}
    name = f"{type(value).__module__}:{type(value).__qualname__}"
    if dataclasses.is_dataclass(value) and name in _allowed_dataclasses():
        fields = {f.name: encode_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__dataclass__": name, "fields": fields}
    raise Uncacheable(f"cannot cache a value of type {type(value).__name__}")


def decode_value(data: Any) -> Any:
    """Invert :func:`encode_value`."""
    if isinstance(data, list):
        return [decode_value(v) for v in data]
    if not isinstance(data, dict):
        return data
    if "__tuple__" in data:
        return tuple(decode_value(v) for v in data["__tuple__"])
    if "__dict__" in data:
        return {decode_value(k): decode_value(v) for k, v in data["__dict__"]}
    if "__image__" in data:
        from PIL import Image

        image = Image.open(io.BytesIO(base64.b64decode(data["__image__"])))
        image.load()
        return image
    if "__ndarray__" in data or "__npscalar__" in data:
        import numpy as np

        raw = base64.b64decode(data.get("__ndarray__") or data["__npscalar__"])
        array = np.load(io.BytesIO(raw), allow_pickle=False)
        return array if "__ndarray__" in data else array[()]
    if "__dataclass__" in data:
        cls = _allowed_dataclasses()[data["__dataclass__"]]
        return cls(**{k: decode_value(v) for k, v in data["fields"].items()})
    raise ValueError(f"unknown cached value: {sorted(data)}")


class CachingBackend:
    """Proxy that caches the results of a backend's inference methods.

    Attribute reads and other methods go straight to the wrapped backend, so the proxy satisfies
    the same role protocol.

    Args:
        role: The role the backend plays (selects :data:`CACHED_METHODS`).
        spec: Backend name and options: part of every key.
        backend: The real backend.
        store: Where results are kept.
    """

    def __init__(self, role: str, spec: RoleConfig, backend: Any, store: CallCache) -> None:
        self._role = role
        self._spec_key = json.dumps([spec.backend, spec.key()[1]])
        self._backend = backend
        self._store = store

    @property
    def wrapped(self) -> Any:
        """The real backend."""
        return self._backend

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._backend, name)
        if name in CACHED_METHODS.get(self._role, ()) and callable(attr):
            return self._cached(name, attr)
        return attr

    def _cached(self, method: str, call: Callable[..., Any]) -> Callable[..., Any]:
        kind = f"{self._role}.{method}"

        def cached_call(*args: Any, **kwargs: Any) -> Any:
            try:
                key = _digest(kind, self._spec_key, json.dumps(_key_part([list(args), kwargs])))
            except Uncacheable:
                self._store.note_uncacheable(kind)
                return call(*args, **kwargs)
            raw = self._store.get(kind, key)
            if raw is not None:
                try:
                    return decode_value(json.loads(raw))
                except Exception:  # a bad entry is a miss: recomputed below and replaced
                    self._store.note_corrupt(kind, key)
            result = call(*args, **kwargs)
            try:
                self._store.put(kind, key, json.dumps(encode_value(result)))
            except Uncacheable:
                self._store.note_uncacheable(kind)
            return result

        cached_call.__name__ = method
        return cached_call

    def __repr__(self) -> str:
        return f"CachingBackend({self._backend!r})"


def cache_wrap(store: CallCache) -> Callable[[str, RoleConfig, Any], Any]:
    """The ``wrap`` hook that routes one runtime's calls through ``store``.

    ``Models(config, wrap=cache_wrap(store))``: the llm becomes a copy of the backend with an
    :class:`LLMCallCache` of its own (the original, possibly shared with other runs or injected by
    a caller, is left untouched); the vision roles get a :class:`CachingBackend` proxy. Another
    runtime, in this process or another thread, is not affected.
    """
    llm_cache = LLMCallCache(store)

    def wrap(role: str, spec: RoleConfig, backend: Any) -> Any:
        if role == "llm":
            return backend.model_copy(update={"cache": llm_cache})
        if role in CACHED_METHODS and not isinstance(backend, CachingBackend):
            return CachingBackend(role, spec, backend, store)
        return backend

    return wrap

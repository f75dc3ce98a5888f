"""Traces of every model call: vision roles through LangChain callbacks, spans to OpenTelemetry.

The llm role is a LangChain chat model, so callback handlers (LangSmith, Langfuse, OpenTelemetry
instrumentations, your own) already see its calls. The vision roles (vlm, scorer, ocr, imagegen,
embed) are plain protocols; :func:`traced` wraps a backend so that each role method call
(``vlm.caption``, ``scorer.score`` ...) runs as a LangChain run nested under whatever run is
current (the graph node that made it): handlers see its inputs (images as ``img_…`` content
hashes with their size, never pixels), its output (summarised the same way), its latency and
whether the eval call cache answered it. With no handler configured the wrapper calls straight
through, so tracing off costs a few context lookups per call (``bench/trace_overhead.py``).

:func:`tracing_to` attaches a span handler (:mod:`mmagents._otel`) to every LangChain run started inside it (through
LangChain's configure hook, so nothing has to pass ``callbacks=`` around) and writes one
OpenTelemetry span per run: to a JSONL file, and also by OTLP/HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. ``mmagents trace show FILE`` renders such a file.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmagents._otel import SpanHandler

__all__ = [
    "ROLE_METHODS",
    "describe",
    "note_cache",
    "traced",
    "tracing_to",
]

#: role → the backend methods that become traced runs (everything else passes through).
ROLE_METHODS: dict[str, frozenset[str]] = {
    "vlm": frozenset({"caption", "answer"}),
    "scorer": frozenset({"score", "embed_images", "embed_texts"}),
    "ocr": frozenset({"read"}),
    "imagegen": frozenset({"generate"}),
    "embed": frozenset({"embed"}),
}
ROLE_TAG = "mmagents:role"
_TEXT_LIMIT = 2000

# The eval call cache reports hit/miss here while a traced call listens (a list), else no-op.
_CACHE_PROBE: ContextVar[list[bool] | None] = ContextVar("mmagents_cache_probe", default=None)
# The handler tracing_to() attaches to every LangChain run configured while it is set (registered
# with LangChain's configure hooks by mmagents._otel, on first use).
_ACTIVE: ContextVar[SpanHandler | None] = ContextVar("mmagents_trace_handler", default=None)


def note_cache(hit: bool) -> None:
    """Called by the call cache on each lookup: tells the traced call around it about a hit."""
    probe = _CACHE_PROBE.get()
    if probe is not None:
        probe.append(hit)


def describe(value: Any, depth: int = 0) -> Any:
    """A JSON-able summary of a call argument or result: images as content hashes, no pixels."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _TEXT_LIMIT else value[:_TEXT_LIMIT] + "…"
    if hasattr(value, "tobytes") and hasattr(value, "size") and hasattr(value, "mode"):
        digest = hashlib.sha256(f"{value.mode}:{value.size}:".encode() + value.tobytes())
        return {"image": "img_" + digest.hexdigest()[:16], "size": list(value.size)}
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # numpy / torch arrays
        shape = [int(n) for n in value.shape]
        out: dict[str, Any] = {"array": shape}
        if int(getattr(value, "size", 0) or 0) <= 16 and hasattr(value, "tolist"):
            out["values"] = value.tolist()
        return out
    if depth > 3:
        return repr(value)[:200]
    if isinstance(value, Mapping):
        return {str(k): describe(v, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, Sequence | set | frozenset):
        items = list(value)
        summary = [describe(v, depth + 1) for v in items[:20]]
        return summary + ([f"… {len(items) - 20} more"] if len(items) > 20 else [])
    if hasattr(value, "__dataclass_fields__"):
        return {f: describe(getattr(value, f), depth + 1) for f in value.__dataclass_fields__}
    return repr(value)[:200]


class _TracedBackend:
    """A role backend whose role methods run as LangChain runs when anyone is listening."""

    def __init__(self, role: str, name: str, backend: Any) -> None:
        self._role = role
        self._name = name
        self._backend = backend
        self._methods = ROLE_METHODS[role]

    @property  # type: ignore[misc]  # isinstance() still sees the backend's own class
    def __class__(self) -> type:  # type: ignore[override]
        return type(self._backend)

    @property
    def wrapped(self) -> Any:
        """The backend behind this proxy."""
        return self._backend

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._backend, attr)
        if attr in self._methods and callable(value):
            return _traced_method(self._role, self._name, attr, value)
        return value

    def __repr__(self) -> str:
        return f"traced({self._backend!r})"


def _traced_method(role: str, backend: str, method: str, call: Any) -> Any:
    run_name = f"{role}.{method}"

    def traced_call(*args: Any, **kwargs: Any) -> Any:
        if not _maybe_listening():
            return call(*args, **kwargs)  # the fast path: a few context lookups
        from langchain_core.runnables import RunnableLambda
        from langchain_core.runnables.config import ensure_config, get_callback_manager_for_config

        config = ensure_config()
        if not get_callback_manager_for_config(config).handlers:
            return call(*args, **kwargs)  # nobody listening: no run, no summaries
        result: dict[str, Any] = {}

        def run(_inputs: Any) -> dict[str, Any]:
            token = _CACHE_PROBE.set([])
            try:
                started = time.perf_counter()
                result["value"] = call(*args, **kwargs)
                elapsed = time.perf_counter() - started
                probe = _CACHE_PROBE.get() or []
            finally:
                _CACHE_PROBE.reset(token)
            return {
                "output": describe(result["value"]),
                "cache_hit": probe[0] if probe else None,
                "latency_s": round(elapsed, 6),
            }

        inputs = {"args": describe(list(args)), **{k: describe(v) for k, v in kwargs.items()}}
        RunnableLambda(run, name=run_name).invoke(
            inputs,
            {
                "run_name": run_name,
                "tags": [ROLE_TAG],
                "metadata": {"mmagents_role": role, "mmagents_backend": backend},
            },
        )
        return result["value"]

    return traced_call


_ENV_TRACING = ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING_V2")


def _maybe_listening() -> bool:
    """Cheap test of whether any handler could see a run started here: callbacks inherited from
    the current run (a graph node's), :func:`tracing_to`, or LangSmith's environment switch."""
    if _ACTIVE.get() is not None or any(os.environ.get(v) for v in _ENV_TRACING):
        return True
    # langchain_core is imported by whoever runs a graph; imported here, not at module top, so
    # the core package imports without it.
    from langchain_core.callbacks import BaseCallbackManager
    from langchain_core.runnables.config import var_child_runnable_config

    parent = var_child_runnable_config.get()
    callbacks = parent.get("callbacks") if parent else None
    if isinstance(callbacks, BaseCallbackManager):
        return bool(callbacks.handlers)
    return bool(callbacks)


def traced(role: str, name: str, backend: Any) -> Any:
    """``backend`` with its role methods traced (the llm role, already LangChain, unchanged)."""
    if role not in ROLE_METHODS or isinstance(backend, _TracedBackend):
        return backend
    if not any(callable(getattr(backend, m, None)) for m in ROLE_METHODS[role]):
        return backend  # not a role backend (a test double, a wrapper's own object): leave it
    return _TracedBackend(role, name, backend)


@contextmanager
def tracing_to(path: str | Path | None) -> Iterator[SpanHandler | None]:
    """Trace every LangChain run (and so every role call) started inside, as OpenTelemetry spans.

    Args:
        path: The JSONL file the spans go to; ``None`` turns tracing off (yields ``None``).
            When ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, spans are also exported by OTLP/HTTP.

    The tracer provider is this call's own (the process's global provider is left alone); spans
    are on disk when the block exits, even when it raises.
    """
    if path is None:
        yield None
        return
    from mmagents._otel import open_provider

    provider, handler = open_provider(path, _ACTIVE)
    token = _ACTIVE.set(handler)
    try:
        yield handler
    finally:
        _ACTIVE.reset(token)
        provider.shutdown()

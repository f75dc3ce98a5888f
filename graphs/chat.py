"""``chat``: a multi-turn, tool-using agent over the role tools and the pipeline graphs.

The graph::

    START → intake ─┬─→ tools ─→ agent ─┬─→ tools ─→ agent ─ … (at most max_steps tool rounds)
                    └─────────→ agent   └─→ END

* ``intake`` captions each image newly attached to the user's message (a visible ``caption`` tool
  call), so even a small text-only planner starts from what the picture shows.
* ``agent`` is the planner LLM with every tool bound; it either calls tools or answers. Images are
  handles in the text (``[image img_… attached]``); pixels reach the LLM only when
  ``[graphs.chat] vision = true`` (a vision chat backend).
* ``tools`` runs the calls. A failing tool never crashes the turn: its error comes back to the
  planner as a tool message with ``status="error"`` and content
  ``{"error": {"type": "<exception class>", "message": "..."}}``.
* A planner that asks again for a call it already made (same tool and arguments, as small models
  do) is asked once more, allowed only to answer (``tool_choice="none"``), from the result it has.
* After ``max_steps`` tool rounds in one turn the planner gets one more call to answer; if it asks
  for yet more tools, the turn ends with a message saying the step limit was reached.

Threads persist in a SQLite checkpointer (``<home>/chat/threads.sqlite``), so a conversation
resumes after the process exits. :class:`ChatAgent` wraps graph, checkpointer and streaming into the
events the terminal chat and the HTTP server show.

Settings, all optional::

    [graphs.chat]
    max_steps = 6            # tool rounds per user turn
    tools = ["caption", "answer_question"]   # default (empty): every registered tool
    vision = false           # send image pixels to the planner (vision chat models only)
    describe_images = true   # caption newly attached images before planning
    max_tool_chars = 2000    # tool results longer than this are truncated for the planner
    history_turns = 8        # the planner sees this many latest user turns (the thread keeps all)
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.graph.message import add_messages
from pydantic import BaseModel, Field

from mmagents.errors import ConfigError
from mmagents.tools import TOOLS, register_tool

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.tools import BaseTool
    from langgraph.checkpoint.base import BaseCheckpointSaver

    from mmagents._config import Config

__all__ = [
    "PIPELINE_TOOLS",
    "AnswerEvent",
    "ChatAgent",
    "ChatEvent",
    "ChatSettings",
    "ChatState",
    "TokenEvent",
    "ToolCallEvent",
    "ToolResultEvent",
    "build_chat_graph",
    "chat_tools",
    "image_marker",
    "open_checkpointer",
]

#: The pipeline graphs as tools: name → (a pipeline's own tool, the generic wrapper used when
#: that module is absent). Lazy: nothing is imported until a tool is built or called.
PIPELINE_TOOLS: dict[str, tuple[str | None, str]] = {
    "run_idealgpt": (None, "mmagents.tools.pipelines:RunIdealGPTTool"),
    "classify_meme": (
        "mmagents.tools.meme:ClassifyMemeTool",
        "mmagents.tools.pipelines:ClassifyMemeTool",
    ),
    "classify_image": (None, "mmagents.tools.pipelines:ClassifyImageTool"),
}


def _register_pipeline_tools() -> None:
    for name, (own, generic) in PIPELINE_TOOLS.items():
        if name in TOOLS:  # the pipeline module registered its tool already
            continue
        own_found = own is not None and importlib.util.find_spec(own.partition(":")[0]) is not None
        register_tool(name, own if own_found else generic)


_register_pipeline_tools()

_MARKER = re.compile(r"\[image (img_[0-9a-f]{16}) attached\]")
_HANDLE = re.compile(r"img_[0-9a-f]{16}")
_INTAKE = "intake"


def image_marker(handle: str) -> str:
    """How an attached image appears in a user message: ``[image img_… attached]``."""
    return f"[image {handle} attached]"


# -- settings and state --------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatSettings:
    """The ``[graphs.chat]`` section (see the module docstring)."""

    max_steps: int = 6
    tools: tuple[str, ...] = ()  # empty: every registered tool
    vision: bool = False
    describe_images: bool = True
    max_tool_chars: int = 2000
    history_turns: int = 8

    @classmethod
    def from_config(cls, config: Config) -> ChatSettings:
        """Read ``[graphs.chat]``.

        Raises:
            ConfigError: an unknown key or a bad value.
        """
        from mmagents.graphs._settings import settings_from_section

        settings = settings_from_section(cls, config, "graphs.chat")
        for name in ("max_steps", "history_turns", "max_tool_chars"):
            if getattr(settings, name) < 1:
                raise ConfigError(
                    f"[graphs.chat] {name} must be >= 1, got {getattr(settings, name)}"
                )
        return settings


class ChatState(TypedDict):
    """A chat thread: its messages (images appear in them as handles)."""

    messages: Annotated[list[AnyMessage], add_messages]


# -- tools ---------------------------------------------------------------------------------------


def chat_tools(
    config: Config, names: Sequence[str] | None = None
) -> tuple[list[BaseTool], dict[str, str]]:
    """The tools the agent can use, and those left out with the reason.

    Args:
        config: Bound into every tool.
        names: Tool names (default: ``[graphs.chat] tools``, else every registered tool).

    Raises:
        ConfigError: an unknown tool name.
    """
    from mmagents.tools import build_tool

    if names is None:
        names = ChatSettings.from_config(config).tools or TOOLS.names()
    chosen = list(names)
    tools: list[BaseTool] = []
    omitted: dict[str, str] = {}
    for name in chosen:
        tool = build_tool(name, config)
        reason = getattr(tool, "unavailable_reason", lambda: None)()
        if reason:
            omitted[name] = reason
        else:
            tools.append(tool)
    return tools, omitted


def _error_content(error_type: str, message: str) -> str:
    return json.dumps({"error": {"type": error_type, "message": message}})


def _error_message(call: dict[str, Any], error_type: str, message: str) -> ToolMessage:
    return ToolMessage(
        content=_error_content(error_type, message),
        name=call["name"],
        tool_call_id=call["id"],
        status="error",
        artifact={"error_type": error_type},
    )


def _typed_errors(max_chars: int) -> Any:
    """A ToolNode wrapper: exceptions become typed error tool messages; long results are cut."""
    from langgraph.prebuilt.tool_node import ToolInvocationError

    def wrap(request: Any, execute: Any) -> Any:
        call = request.tool_call
        if request.tool is None:
            return _error_message(call, "UnknownToolError", f"there is no tool {call['name']!r}")
        try:
            result = execute(request)
        except ToolInvocationError as exc:
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                for e in exc.filtered_errors or []
            )
            return _error_message(call, "ValidationError", detail or str(exc.source))
        except Exception as exc:  # every tool failure goes back to the planner, typed
            return _error_message(call, type(exc).__name__, str(exc))
        long = isinstance(result, ToolMessage) and isinstance(result.content, str)
        if long and len(result.content) > max_chars:
            cut = len(result.content) - max_chars
            result.content = f"{result.content[:max_chars]}… [{cut} more characters cut]"
        return result

    return wrap


# -- planner -------------------------------------------------------------------------------------


class _Decision(BaseModel):
    """One planner step, for chat models without tool calling: call a tool, or answer."""

    tool: str | None = Field(default=None, description="Name of the tool to call; null to answer.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="The tool's arguments.")
    answer: str | None = Field(default=None, description="The answer to the user.")


def _planner(llm: BaseChatModel, tools: list[BaseTool]) -> Any:
    """``llm`` with ``tools`` bound; models without ``bind_tools`` decide through a JSON schema."""
    from langchain_core.language_models import BaseChatModel as _Base
    from langchain_core.runnables import RunnableLambda

    if not tools:
        return llm
    if type(llm).bind_tools is not _Base.bind_tools:
        return llm.bind_tools(tools)

    from mmagents.models._tool_grammar import format_tools, new_call_id, with_tool_instruction
    from mmagents.models.structured import invoke_structured

    specs = format_tools(tools)
    names = {spec["name"] for spec in specs}

    def decide(messages: list[BaseMessage], config: Any = None) -> AIMessage:
        prompt = with_tool_instruction(messages, specs)
        decision = invoke_structured(llm, _Decision, prompt, config=config).value
        if decision.tool in names:
            call = {"name": decision.tool, "args": decision.arguments, "id": new_call_id()}
            return AIMessage(content="", tool_calls=[call])
        return AIMessage(content=decision.answer or "")

    return RunnableLambda(decide)


def _answerer(llm: BaseChatModel, tools: list[BaseTool]) -> Any:
    """``llm`` made to answer now: tools bound with ``tool_choice="none"`` where supported.

    Keeping the tools bound keeps the model's reply format (for llama.cpp, the grammar then allows
    only ``{"answer": ...}``), so a small model does not imitate a tool call in plain text.
    """
    from langchain_core.language_models import BaseChatModel as _Base

    if tools and type(llm).bind_tools is not _Base.bind_tools:
        try:
            return llm.bind_tools(tools, tool_choice="none")
        except (NotImplementedError, ValueError):  # a backend without tool_choice support
            pass
    return llm


def _since_last_user(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            return list(messages[i + 1 :])
    return list(messages)


def _call_key(call: Mapping[str, Any]) -> tuple[str, str]:
    return call["name"], json.dumps(call["args"], sort_keys=True, default=str)


def _repeats(reply: AIMessage, messages: Sequence[BaseMessage]) -> bool:
    """Whether every call in ``reply`` was already made (same tool, same arguments)."""
    made = {_call_key(c) for m in messages if isinstance(m, AIMessage) for c in m.tool_calls}
    return all(_call_key(c) in made for c in reply.tool_calls)


def _recent_turns(messages: Sequence[BaseMessage], turns: int) -> list[BaseMessage]:
    """The messages from the ``turns``-th latest user message on (small context windows)."""
    starts = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)]
    return list(messages[starts[-turns] :] if len(starts) > turns else messages)


def _tool_rounds(messages: Sequence[BaseMessage]) -> int:
    """Planner tool rounds in the current turn (the automatic intake does not count)."""
    return sum(
        1
        for m in _since_last_user(messages)
        if isinstance(m, AIMessage) and m.tool_calls and m.name != _INTAKE
    )


def _step_limit_message(
    messages: Sequence[BaseMessage], wanted: AIMessage, max_steps: int
) -> AIMessage:
    names = ", ".join(call["name"] for call in wanted.tool_calls)
    last = next((m for m in reversed(messages) if isinstance(m, ToolMessage)), None)
    tail = f" The last tool result was: {last.text[:300]}" if last is not None else ""
    return AIMessage(
        content=(
            f"I stopped after {max_steps} tool rounds in this turn (the step limit, "
            f"[graphs.chat] max_steps = {max_steps}) without reaching a final answer; "
            f"I still wanted to call {names}.{tail}"
        ),
        name="step_limit",
        response_metadata={"finish_reason": "step_limit"},
    )


class _Nodes:
    """The graph's nodes, sharing the planner, the tools and the settings."""

    def __init__(
        self, config: Config, llm: BaseChatModel, tools: list[BaseTool], settings: ChatSettings
    ) -> None:
        self.config = config
        self.settings = settings
        self.tool_names = {t.name for t in tools}
        self.planner = _planner(llm, tools)
        self.answerer = _answerer(llm, tools)

    def intake(self, state: ChatState) -> dict[str, Any]:
        """Caption images attached to the newest user message that no caption call has seen."""
        if not self.settings.describe_images or "caption" not in self.tool_names:
            return {}
        messages = state["messages"]
        newest = messages[-1] if messages else None
        if not isinstance(newest, HumanMessage):
            return {}
        seen = {
            call["args"].get("image")
            for m in messages
            if isinstance(m, AIMessage)
            for call in m.tool_calls
            if call["name"] == "caption"
        }
        fresh = [h for h in dict.fromkeys(_MARKER.findall(newest.text)) if h not in seen]
        if not fresh:
            return {}
        from mmagents.models._tool_grammar import new_call_id

        calls = [{"name": "caption", "args": {"image": h}, "id": new_call_id()} for h in fresh]
        return {"messages": [AIMessage(content="", tool_calls=calls, name=_INTAKE)]}

    def agent(self, state: ChatState) -> dict[str, Any]:
        """One planner step: tool calls or the answer (or the step-limit message)."""
        messages = state["messages"]
        recent = _recent_turns(messages, self.settings.history_turns)
        prompt: list[BaseMessage] = [SystemMessage(content=self._system_text(messages)), *recent]
        if self.settings.vision:
            prompt = _with_pixels(prompt, self.config)
        reply = self.planner.invoke(prompt)
        if reply.tool_calls and _repeats(reply, recent):
            # Small planners re-request a result they already have instead of answering; the
            # result is in the prompt, so ask the same model, without tools, for the answer.
            reply = self.answerer.invoke(prompt)
        if reply.tool_calls and _tool_rounds(messages) >= self.settings.max_steps:
            # The planner wants yet another round: stop instead, saying so.
            return {"messages": [_step_limit_message(messages, reply, self.settings.max_steps)]}
        return {"messages": [reply]}

    def _system_text(self, messages: Sequence[BaseMessage]) -> str:
        from mmagents.prompts import load_prompt

        images = list(dict.fromkeys(h for m in messages for h in _HANDLE.findall(m.text)))
        parts = load_prompt("chat").render(
            "agent", images=images, images_attached=[], text="", vision=self.settings.vision
        )
        return parts["system"]


def _route_intake(state: ChatState) -> Literal["tools", "agent"]:
    last = state["messages"][-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else "agent"


def _route_agent(state: ChatState) -> Literal["tools", "__end__"]:
    last = state["messages"][-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else "__end__"


def _with_pixels(messages: list[BaseMessage], config: Config) -> list[BaseMessage]:
    """Vision backends only: attach each marked image to its user message as a data URL part."""
    from mmagents.images import default_store

    store = default_store(config)
    out: list[BaseMessage] = []
    for message in messages:
        handles = _MARKER.findall(message.text) if isinstance(message, HumanMessage) else []
        if not handles:
            out.append(message)
            continue
        parts: list[str | dict[str, Any]] = [{"type": "text", "text": message.text}]
        for handle in handles:
            buffer = io.BytesIO()
            image = store.get(handle).copy()
            image.thumbnail((1024, 1024))  # enough for a chat model; keeps requests small
            image.save(buffer, format="PNG")
            url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
            parts.append({"type": "image_url", "image_url": {"url": url}})
        out.append(HumanMessage(content=parts, id=message.id))
    return out


def build_chat_graph(
    config: Config,
    *,
    llm: BaseChatModel | None = None,
    tools: list[BaseTool] | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    settings: ChatSettings | None = None,
) -> Any:
    """Compile the chat agent graph.

    Args:
        config: The resolved configuration.
        llm: The planner (default: the ``llm`` role).
        tools: The tools (default: :func:`chat_tools`).
        checkpointer: Where threads persist (default: none; :class:`ChatAgent` opens SQLite).
        settings: Defaults to ``[graphs.chat]``.

    Returns:
        A compiled graph over :class:`ChatState`; invoke it with a ``thread_id``.
    """
    from langgraph.graph import END, START, StateGraph
    from langgraph.prebuilt import ToolNode

    from mmagents.models import load_role

    settings = settings or ChatSettings.from_config(config)
    tools = chat_tools(config)[0] if tools is None else tools
    nodes = _Nodes(config, llm or load_role("llm", config), tools, settings)
    graph = StateGraph(ChatState)
    graph.add_node("intake", nodes.intake)
    graph.add_node("agent", nodes.agent)
    graph.add_node(
        "tools",
        ToolNode(
            tools, handle_tool_errors=False, wrap_tool_call=_typed_errors(settings.max_tool_chars)
        ),
    )
    graph.add_edge(START, "intake")
    graph.add_conditional_edges("intake", _route_intake, ["tools", "agent"])
    graph.add_conditional_edges("agent", _route_agent, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=checkpointer, name="chat")


# -- sessions ------------------------------------------------------------------------------------


def open_checkpointer(config: Config) -> Any:
    """The SQLite checkpointer at ``<home>/chat/threads.sqlite`` (safe to share across threads)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = config.home / "chat" / "threads.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteSaver(sqlite3.connect(str(path), check_same_thread=False))


@dataclass(frozen=True)
class TokenEvent:
    """A piece of the answer, as the planner generates it."""

    text: str


@dataclass(frozen=True)
class ToolCallEvent:
    """A tool call (``auto`` when the graph made it, e.g. the intake caption)."""

    name: str
    args: dict[str, Any]
    id: str
    auto: bool = False


@dataclass(frozen=True)
class ToolResultEvent:
    """A tool's result; ``error_type`` is set when the tool failed."""

    name: str
    content: str
    id: str
    error_type: str | None = None


@dataclass(frozen=True)
class AnswerEvent:
    """The turn's final answer. ``streamed``: its text already went out as tokens."""

    text: str
    finish_reason: Literal["stop", "step_limit"]
    streamed: bool


ChatEvent = TokenEvent | ToolCallEvent | ToolResultEvent | AnswerEvent


class ChatAgent:
    """The chat graph with persistent threads, streaming a turn as :data:`ChatEvent` objects.

    Args:
        config: The resolved configuration.
        llm: The planner (default: the ``llm`` role).
        tools: Tool names (default: ``[graphs.chat] tools`` or all registered).
        checkpointer: Default: SQLite under the config's home (:func:`open_checkpointer`).
    """

    def __init__(
        self,
        config: Config,
        *,
        llm: BaseChatModel | None = None,
        tools: Sequence[str] | None = None,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
    ) -> None:
        self.config = config
        self.settings = ChatSettings.from_config(config)
        self.tools, self.omitted = chat_tools(config, tools)
        self.checkpointer = checkpointer if checkpointer is not None else open_checkpointer(config)
        self.graph = build_chat_graph(
            config,
            llm=llm,
            tools=self.tools,
            checkpointer=self.checkpointer,
            settings=self.settings,
        )
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _run_config(self, thread_id: str) -> dict[str, Any]:
        # A turn visits at most 2 * max_steps + 3 nodes; this backstop is never the one that stops.
        limit = 2 * self.settings.max_steps + 8
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": limit}

    def lock(self, thread_id: str) -> threading.Lock:
        """The lock serialising turns of one thread (concurrent turns would interleave)."""
        with self._locks_guard:
            return self._locks.setdefault(thread_id, threading.Lock())

    def user_message(self, text: str, images: Sequence[str] = ()) -> HumanMessage:
        """The user turn as stored: image markers first, then the text."""
        from mmagents.prompts import load_prompt

        parts = load_prompt("chat").render(
            "agent", images=[], images_attached=list(images), text=text, vision=False
        )
        return HumanMessage(content=parts["user"])

    def turn(
        self,
        thread_id: str,
        text: str,
        images: Sequence[str] = (),
        *,
        history: Sequence[BaseMessage] = (),
    ) -> Iterator[ChatEvent]:
        """Run one user turn, yielding tokens, tool calls, tool results, then the answer.

        Args:
            thread_id: The conversation; its earlier turns come from the checkpointer.
            text: What the user wrote.
            images: Handles of images attached to this message.
            history: Earlier messages to add before this turn (e.g. a stateless API request).
        """
        message = self.user_message(text, images)
        with self.lock(thread_id):
            yield from self._stream({"messages": [*history, message]}, thread_id)

    def _stream(self, inputs: dict[str, Any], thread_id: str) -> Iterator[ChatEvent]:
        final: AIMessage | None = None
        streamed = False
        for mode, payload in self.graph.stream(
            inputs, self._run_config(thread_id), stream_mode=["messages", "updates"]
        ):
            if mode == "messages":
                chunk, meta = payload
                planner = meta.get("langgraph_node") == "agent"
                if planner and isinstance(chunk, AIMessageChunk) and chunk.text:
                    streamed = True
                    yield TokenEvent(chunk.text)
                continue
            for node, update in payload.items():
                for msg in (update or {}).get("messages", []):
                    if isinstance(msg, AIMessage) and msg.tool_calls:
                        streamed = False  # text streamed before a tool call is not the answer
                        for call in msg.tool_calls:
                            yield ToolCallEvent(
                                call["name"], call["args"], call["id"] or "", msg.name == _INTAKE
                            )
                    elif isinstance(msg, ToolMessage):
                        error = (
                            (msg.artifact or {}).get("error_type")
                            if msg.status == "error"
                            else None
                        )
                        yield ToolResultEvent(msg.name or "", msg.text, msg.tool_call_id, error)
                    elif isinstance(msg, AIMessage) and node == "agent":
                        final = msg
        if final is None:  # cannot happen with this graph's edges; guard against silent turns
            raise RuntimeError("the chat graph ended without an answer")
        reason = final.response_metadata.get("finish_reason")
        yield AnswerEvent(final.text, "step_limit" if reason == "step_limit" else "stop", streamed)

    def ask(self, thread_id: str, text: str, images: Sequence[str] = ()) -> AnswerEvent:
        """Run one turn and return only its answer."""
        events = list(self.turn(thread_id, text, images))
        answer = events[-1]
        assert isinstance(answer, AnswerEvent)
        return answer

    def history(self, thread_id: str) -> list[BaseMessage]:
        """The thread's messages so far (empty for a new thread)."""
        snapshot = self.graph.get_state(self._run_config(thread_id))
        return list(snapshot.values.get("messages", []))

    def reset(self, thread_id: str) -> None:
        """Forget the thread's messages."""
        self.checkpointer.delete_thread(thread_id)
        with self._locks_guard:
            self._locks.pop(thread_id, None)

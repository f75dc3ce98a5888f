"""Chat sessions: the ``chat`` graph with persistent threads, a turn streamed as events.

:class:`ChatAgent` is what the terminal chat (``mmagents chat``) and the OpenAI-compatible server
(``mmagents serve``) talk to: it builds the graph once with its tools, keeps threads in a SQLite
checkpointer (``<home>/chat/threads.sqlite``) so a conversation resumes after the process exits,
serialises turns of one thread, and turns LangGraph's stream into :data:`ChatEvent` objects
(answer tokens as they are generated, tool calls, tool results, the final answer).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver

from mmagents._config import Config
from mmagents.graphs._run import sqlite_checkpointer
from mmagents.graphs._settings import resolve_settings
from mmagents.graphs.chat import (
    INTAKE,
    ChatSettings,
    build_chat_graph,
    chat_tools,
    user_message,
)
from mmagents.models.sampling import Sampling
from mmagents.runtime import Models

__all__ = [
    "AnswerEvent",
    "ChatAgent",
    "ChatEvent",
    "TokenEvent",
    "ToolCallEvent",
    "ToolResultEvent",
    "threads_path",
]


def threads_path(config: Config) -> Path:
    """Where chat threads persist: ``<home>/chat/threads.sqlite``."""
    return config.home / "chat" / "threads.sqlite"


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
    """The turn's final answer. ``streamed``: its text already went out as tokens.

    ``finish_reason`` is ``length`` when the run's ``max_tokens`` (``ChatSettings.sampling``) cut
    the answer or was spent before one.
    """

    text: str
    finish_reason: Literal["stop", "step_limit", "length"]
    streamed: bool


ChatEvent = TokenEvent | ToolCallEvent | ToolResultEvent | AnswerEvent


class ChatAgent:
    """The chat graph with persistent threads, streaming a turn as :data:`ChatEvent` objects.

    Args:
        config: The resolved configuration.
        llm: The planner (default: the ``llm`` role).
        tools: Tool names (default: ``[graphs.chat] tools`` or all registered).
        checkpointer: Default: SQLite under the config's home (:func:`threads_path`).
        models: The runtime (default: the config's backends, with ``llm`` if given).

    Raises:
        ConfigError: bad ``[graphs.chat]`` values or an unknown tool name.
    """

    def __init__(
        self,
        config: Config,
        *,
        llm: BaseChatModel | None = None,
        tools: Sequence[str] | None = None,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
        models: Models | None = None,
    ) -> None:
        self.config = config
        settings = resolve_settings(ChatSettings, config)
        if tools is not None:
            settings = settings.model_copy(update={"tools": tuple(tools)})
        self.settings = settings
        #: The runtime the graph and its tools use (the OpenAI server asks its llm for
        #: structured answers).
        self.models = models or Models(config, llm=llm)
        self.tools: list[BaseTool]
        self.tools, self.omitted = chat_tools(config, settings.tools, models=self.models)
        self.checkpointer = (
            checkpointer if checkpointer is not None else sqlite_checkpointer(threads_path(config))
        )
        self.graph = build_chat_graph(
            config,
            models=self.models,
            settings=settings,
            checkpointer=self.checkpointer,
        )
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _run_config(self, thread_id: str) -> RunnableConfig:
        # A turn visits at most 2 * max_steps + 3 nodes; this backstop is never the one that stops.
        limit = 2 * self.settings.max_steps + 8
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": limit}

    def lock(self, thread_id: str) -> threading.Lock:
        """The lock serialising turns of one thread (concurrent turns would interleave)."""
        with self._locks_guard:
            return self._locks.setdefault(thread_id, threading.Lock())

    def user_message(self, text: str, images: Sequence[str] = ()) -> HumanMessage:
        """The user turn as stored: image markers first, then the text."""
        return user_message(text, images)

    def turn(
        self,
        thread_id: str,
        text: str,
        images: Sequence[str] = (),
        *,
        history: Sequence[BaseMessage] = (),
        instructions: str = "",
        sampling: Sampling | None = None,
    ) -> Iterator[ChatEvent]:
        """Run one user turn, yielding tokens, tool calls, tool results, then the answer.

        Args:
            thread_id: The conversation; its earlier turns come from the checkpointer.
            text: What the user wrote.
            images: Handles of images attached to this message.
            history: Earlier messages to add before this turn (e.g. a stateless API request).
            instructions: Extra instructions for this turn only (``ChatSettings.instructions``).
            sampling: The planner's sampling for this turn only (``ChatSettings.sampling``).
        """
        message = user_message(text, images)
        update: dict[str, Any] = {}
        if instructions:
            update["instructions"] = instructions
        if sampling is not None:
            update["sampling"] = sampling
        context = self.settings.model_copy(update=update) if update else self.settings
        with self.lock(thread_id):
            yield from self._stream({"messages": [*history, message]}, thread_id, context)

    def _stream(
        self, inputs: dict[str, Any], thread_id: str, context: ChatSettings | None = None
    ) -> Iterator[ChatEvent]:
        # The token stream needs LangGraph's "messages" mode, which the pipelines' shared
        # updates-and-values loop (graphs/_run.py) does not carry.
        final: AIMessage | None = None
        streamed = False
        for mode, payload in self.graph.stream(
            inputs,
            self._run_config(thread_id),
            context=context or self.settings,
            stream_mode=["messages", "updates"],
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
                            auto = msg.name == INTAKE
                            yield ToolCallEvent(call["name"], call["args"], call["id"] or "", auto)
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
        finish: Literal["stop", "step_limit", "length"] = (
            reason if reason in ("step_limit", "length") else "stop"
        )
        yield AnswerEvent(final.text, finish, streamed)

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

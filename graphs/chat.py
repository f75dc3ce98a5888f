"""``chat``: a multi-turn, tool-using agent over the role tools and the pipeline graphs.

The graph::

    START → intake ─┬─→ tools ─→ agent ─┬─→ tools ─→ agent ─ … (at most max_steps tool rounds)
                    └─────────→ agent   └─→ END

* ``intake`` captions each image newly attached to the user's message (a visible ``caption`` tool
  call), so even a small text-only planner starts from what the picture shows.
* ``agent`` is the planner LLM with every tool bound; it either calls tools or answers. Images are
  handles in the text (``[image img_… attached]``); pixels reach the LLM only when
  ``vision = true`` (a vision chat backend).
* ``tools`` runs the calls. A failing tool never crashes the turn: its error comes back to the
  planner as a tool message with ``status="error"`` and content
  ``{"error": {"type": "<exception class>", "message": "..."}}``.
* Tool results are untrusted (captions, text read in images, document text: an image can say
  "ignore previous instructions"): the planner sees each one in a ``<tool_result>`` data block
  (:func:`~mmagents.prompts._untrusted.data_block`; tags inside the result are removed, so it
  cannot close its block) and the system prompt says such blocks are data, never instructions.
  The thread keeps the results as the tools returned them.
* A planner that asks again for a call it already made (same tool and arguments, as small models
  do) is asked once more, allowed only to answer (``tool_choice="none"``), from the result it has.
* After ``max_steps`` tool rounds in one turn the planner gets one more call to answer; if it asks
  for yet more tools, the turn ends with a message saying the step limit was reached.

The input and output are the thread's ``messages``; threads persist in a checkpointer
(:class:`~mmagents.graphs.chat_session.ChatAgent` opens SQLite under the config's home and turns
a turn into events for the terminal chat and the HTTP server).

Settings (:class:`ChatSettings`, the run's context; defaults from ``[graphs.chat]``)::

    [graphs.chat]
    max_steps = 6            # tool rounds per user turn
    tools = ["caption", "answer_question"]   # default: every registered tool
    vision = false           # send image pixels to the planner (vision chat models only)
    describe_images = true   # caption newly attached images before planning
    max_tool_chars = 2000    # tool results longer than this are truncated for the planner
    history_turns = 8        # the planner sees this many latest user turns (the thread keeps all)

``tools`` is read when the graph is built (the planner is bound to them); the rest apply per run.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Annotated, Any, ClassVar, Literal, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest, ToolInvocationError
from langgraph.runtime import Runtime
from langgraph.types import Command
from pydantic import BaseModel, Field

from mmagents._config import Config
from mmagents.graphs._settings import PipelineSettings, context_of, resolve_settings
from mmagents.images import ImageStore
from mmagents.models._tool_grammar import format_tools, new_call_id, with_tool_instruction
from mmagents.models.sampling import Sampling, output_tokens
from mmagents.models.structured import invoke_structured
from mmagents.prompts import load_prompt
from mmagents.prompts._untrusted import data_block
from mmagents.runtime import Models
from mmagents.tools import TOOLS, build_tool
from mmagents.tools.mcp_client import mcp_tools

__all__ = [
    "INTAKE",
    "TOOL_RESULT_TAG",
    "ChatInput",
    "ChatOutput",
    "ChatSettings",
    "ChatState",
    "build_chat_graph",
    "chat_tools",
    "image_marker",
    "user_message",
]

SECTION = "graphs.chat"
#: The name of the intake's automatic caption calls (they do not count as planner rounds).
INTAKE = "intake"
_MARKER = re.compile(r"\[image (img_[0-9a-f]{16}) attached\]")
_HANDLE = re.compile(r"img_[0-9a-f]{16}")


def image_marker(handle: str) -> str:
    """How an attached image appears in a user message: ``[image img_… attached]``."""
    return f"[image {handle} attached]"


def user_message(text: str, images: Sequence[str] = ()) -> HumanMessage:
    """The user turn as stored in a thread: image markers first, then the text."""
    parts = load_prompt("chat").render(
        "agent", images=[], images_attached=list(images), text=text, vision=False
    )
    return HumanMessage(content=parts["user"])


# -- settings, schemas and state -----------------------------------------------------------------


class ChatSettings(PipelineSettings):
    """The agent's knobs: the graph's context schema (defaults: ``[graphs.chat]``)."""

    section: ClassVar[str] = SECTION

    max_steps: int = Field(6, ge=1, description="Tool rounds per user turn.")
    tools: tuple[str, ...] | None = Field(
        None, description="Tool names (build time; default: every registered tool)."
    )
    vision: bool = Field(
        False, description="Send image pixels to the planner (vision chat models only)."
    )
    describe_images: bool = Field(
        True, description="Caption newly attached images before planning."
    )
    max_tool_chars: int = Field(
        2000, ge=1, description="Tool results longer than this are cut for the planner."
    )
    history_turns: int = Field(
        8, ge=1, description="The planner sees this many latest user turns (the thread keeps all)."
    )
    instructions: str = Field(
        "",
        max_length=8000,
        description="Extra instructions after the system prompt's own (per run; the OpenAI "
        "server puts its clients' system messages here).",
    )
    sampling: Sampling | None = Field(
        None,
        description="Per-run sampling of the planner's calls (models/sampling.py; max_tokens is "
        "the turn's budget for them). The OpenAI server puts its clients' parameters here.",
    )


class ChatInput(BaseModel):
    """The messages to add to the thread (the user's new message last)."""

    messages: list[AnyMessage] = Field(
        description="New messages; images appear in them as [image img_… attached] markers."
    )


class ChatOutput(TypedDict):
    """The whole thread after the turn; the last message is the answer."""

    messages: list[AnyMessage]


class ChatState(TypedDict):
    """A chat thread: its messages (images appear in them as handles)."""

    messages: Annotated[list[AnyMessage], add_messages]


# -- tools ---------------------------------------------------------------------------------------


def chat_tools(
    config: Config, names: Sequence[str] | None = None, *, models: Models | None = None
) -> tuple[list[BaseTool], dict[str, str]]:
    """The tools the agent can use, and those left out with the reason.

    Args:
        config: Bound into every tool.
        names: Tool names (default: every registered tool).
        models: The agent's runtime, shared by the built-in tools (one vlm, scorer and image
            store for the planner and its tools); default: one runtime of their own per tool.

    Raises:
        ConfigError: an unknown tool name.
        MCPServerError: a configured MCP server could not be started or reached.
    """
    tools: list[BaseTool] = []
    omitted: dict[str, str] = {}
    for name in TOOLS.names() if names is None else names:
        tool = build_tool(name, config, models=models)
        reason = getattr(tool, "unavailable_reason", lambda: None)()
        if reason:
            omitted[name] = reason
        else:
            tools.append(tool)
    tools.extend(mcp_tools(config))  # [mcp.servers] (tools/mcp_client.py); none unless configured
    return tools, omitted


def _error_message(call: Mapping[str, Any], error_type: str, message: str) -> ToolMessage:
    return ToolMessage(
        content=json.dumps({"error": {"type": error_type, "message": message}}),
        name=call["name"],
        tool_call_id=call["id"],
        status="error",
        artifact={"error_type": error_type},
    )


def _typed_errors(
    request: ToolCallRequest,
    execute: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    *,
    default: ChatSettings,
) -> ToolMessage | Command[Any]:
    """ToolNode wrapper: exceptions become typed error tool messages; long results are cut."""
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
    limit = context_of(request.runtime, default).max_tool_chars
    text = result.content if isinstance(result, ToolMessage) else None
    if isinstance(result, ToolMessage) and isinstance(text, str) and len(text) > limit:
        result.content = f"{text[:limit]}… [{len(text) - limit} more characters cut]"
    return result


# -- planner -------------------------------------------------------------------------------------


class _Decision(BaseModel):
    """One planner step, for chat models without tool calling: call a tool, or answer."""

    tool: str | None = Field(default=None, description="Name of the tool to call; null to answer.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="The tool's arguments.")
    answer: str | None = Field(default=None, description="The answer to the user.")


def _can_bind_tools(llm: BaseChatModel) -> bool:
    return type(llm).bind_tools is not BaseChatModel.bind_tools


def _planner(llm: BaseChatModel, tools: list[BaseTool]) -> Runnable[Any, Any]:
    """``llm`` with ``tools`` bound; models without ``bind_tools`` decide through a JSON schema."""
    if not tools:
        return llm
    if _can_bind_tools(llm):
        return llm.bind_tools(tools)
    specs = format_tools(tools)
    names = {spec["name"] for spec in specs}

    def decide(
        messages: list[BaseMessage], config: RunnableConfig | None = None, **sampling: Any
    ) -> AIMessage:
        prompt = with_tool_instruction(messages, specs)
        model: Any = llm.bind(**sampling) if sampling else llm
        decision = invoke_structured(model, _Decision, prompt, config=config).value
        if decision.tool in names:
            call = {"name": decision.tool, "args": decision.arguments, "id": new_call_id()}
            return AIMessage(content="", tool_calls=[call])
        return AIMessage(content=decision.answer or "")

    return RunnableLambda(decide)


def _answerer(llm: BaseChatModel, tools: list[BaseTool]) -> Runnable[Any, Any]:
    """``llm`` made to answer now: tools bound with ``tool_choice="none"`` where supported.

    Keeping the tools bound keeps the model's reply format (for llama.cpp, the grammar then allows
    only ``{"answer": ...}``), so a small model does not imitate a tool call in plain text.
    """
    if tools and _can_bind_tools(llm):
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
        if isinstance(m, AIMessage) and m.tool_calls and m.name != INTAKE
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


def _budget_message(sampling: Sampling | None) -> AIMessage:
    limit = sampling.max_tokens if sampling is not None else None
    return AIMessage(
        content=f"I stopped: the request's max_tokens ({limit}) went on tool calls before an answer.",
        name="length",
        response_metadata={"finish_reason": "length"},
    )


def _system_text(messages: Sequence[BaseMessage], *, vision: bool) -> str:
    images = list(dict.fromkeys(h for m in messages for h in _HANDLE.findall(m.text)))
    parts = load_prompt("chat").render(
        "agent", images=images, images_attached=[], text="", vision=vision
    )
    return parts["system"]


#: The data block every tool result is shown to the planner in (prompts/chat.yaml names it).
TOOL_RESULT_TAG = "tool_result"


def _delimited_results(messages: list[BaseMessage]) -> list[BaseMessage]:
    """The planner's view of the thread: every tool result's text in a ``<tool_result>`` block.

    The text is what a tool read from an image or a document (or its error); wrapped, with tags
    inside it removed, it cannot pass as instructions or close its block early.
    """
    return [
        m.model_copy(update={"content": data_block(m.text, TOOL_RESULT_TAG)})
        if isinstance(m, ToolMessage)
        else m
        for m in messages
    ]


def _with_pixels(messages: list[BaseMessage], store: ImageStore) -> list[BaseMessage]:
    """Vision backends only: attach each marked image to its user message as a data URL part."""
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


# -- nodes and routes ----------------------------------------------------------------------------


def intake(
    state: ChatState,
    runtime: Runtime[ChatSettings],
    *,
    tool_names: frozenset[str],
    default: ChatSettings,
) -> dict[str, Any]:
    """Caption images attached to the newest user message that no caption call has seen."""
    if not context_of(runtime, default).describe_images or "caption" not in tool_names:
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
    calls = [{"name": "caption", "args": {"image": h}, "id": new_call_id()} for h in fresh]
    return {"messages": [AIMessage(content="", tool_calls=calls, name=INTAKE)]}


def agent(
    state: ChatState,
    runtime: Runtime[ChatSettings],
    *,
    planner: Runnable[Any, Any],
    answerer: Runnable[Any, Any],
    models: Models,
    default: ChatSettings,
) -> dict[str, Any]:
    """One planner step: tool calls or the answer (or the step-limit message)."""
    s = context_of(runtime, default)
    messages = state["messages"]
    recent = _recent_turns(messages, s.history_turns)
    system_text = _system_text(messages, vision=s.vision)
    if s.instructions:
        # After the agent's own rules, labelled as the client's: they add to the rules, the
        # tool protocol stays the agent's.
        system_text += f"\n\nInstructions from the client:\n{s.instructions}"
    system = SystemMessage(content=system_text)
    prompt: list[BaseMessage] = [system, *_delimited_results(recent)]
    if s.vision:
        prompt = _with_pixels(prompt, models.store)
    sampling: dict[str, Any] | None = {}
    if s.sampling is not None:  # this run's; None once the turn's max_tokens are spent
        sampling = s.sampling.call_kwargs(output_tokens(_since_last_user(messages)))
    if sampling is None:
        return {"messages": [_budget_message(s.sampling)]}
    reply = planner.invoke(prompt, **sampling)
    if reply.tool_calls and _repeats(reply, recent):
        # Small planners re-request a result they already have instead of answering; the
        # result is in the prompt, so ask the same model, without tools, for the answer.
        reply = answerer.invoke(prompt, **sampling)
    if reply.tool_calls and _tool_rounds(messages) >= s.max_steps:
        # The planner wants yet another round: stop instead, saying so.
        return {"messages": [_step_limit_message(messages, reply, s.max_steps)]}
    return {"messages": [reply]}


def _route(state: ChatState) -> Literal["tools", "__end__"]:
    last = state["messages"][-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else "__end__"


def _route_intake(state: ChatState) -> Literal["tools", "agent"]:
    return "tools" if _route(state) == "tools" else "agent"


def build_chat_graph(
    config: Config | None = None,
    *,
    models: Models | None = None,
    settings: ChatSettings | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[ChatState, ChatSettings, ChatInput, ChatOutput]:
    """Compile the chat agent graph.

    Args:
        config: The configuration (default: ``models.config``, else :func:`load_config`).
        models: The planner (``llm``) and the image store (default: the config's).
        settings: Build-time tool choice and defaults for runs that pass no context
            (default: ``[graphs.chat]``).
        checkpointer: Where threads persist (default: none; ``ChatAgent`` opens SQLite).

    Returns:
        The compiled graph: :class:`ChatInput` in, :class:`ChatOutput` out; run it with a
        ``thread_id`` and per-run :class:`ChatSettings` as ``context=``.

    Raises:
        ConfigError: bad ``[graphs.chat]`` values or an unknown tool name.
    """
    models = models or Models(config)
    default = settings or resolve_settings(ChatSettings, models.config)
    tools, _ = chat_tools(models.config, default.tools, models=models)
    graph = StateGraph(
        ChatState, context_schema=ChatSettings, input_schema=ChatInput, output_schema=ChatOutput
    )
    names = frozenset(t.name for t in tools)
    graph.add_node(INTAKE, partial(intake, tool_names=names, default=default))
    graph.add_node(
        "agent",
        partial(
            agent,
            planner=_planner(models.llm, tools),
            answerer=_answerer(models.llm, tools),
            models=models,
            default=default,
        ),
    )
    wrap = partial(_typed_errors, default=default)
    graph.add_node("tools", ToolNode(tools, handle_tool_errors=False, wrap_tool_call=wrap))
    graph.add_edge(START, INTAKE)
    graph.add_conditional_edges(INTAKE, _route_intake, ["tools", "agent"])
    graph.add_conditional_edges("agent", _route, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=checkpointer, name="chat")

"""Tool calling for chat models without native function calling, through constrained JSON.

A model with tools bound must reply with exactly one JSON object, either::

    {"tool": "<one of the tool names>", "arguments": {...the tool's argument schema...}}
    {"answer": "<text for the user>"}

:func:`decision_schema` writes that choice as a JSON schema (``anyOf`` one branch per tool, each with
the tool's own argument schema), which llama.cpp compiles into a grammar: even a 135M-parameter model
then emits a well-formed call to a real tool with well-typed arguments. Arguments that are image
handles are narrowed to the handles present in the conversation, so the model cannot invent one.

:func:`decision_message` turns the reply into an ``AIMessage`` with proper ``tool_calls``;
:class:`AnswerStream` extracts the answer text while the JSON is still being generated, so answers
stream token by token.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from mmagents.models.structured import parse_json_object

__all__ = [
    "AnswerStream",
    "decision_message",
    "decision_schema",
    "format_tools",
    "handles_in",
    "with_tool_instruction",
]

_HANDLE = re.compile(r"img_[0-9a-f]{16}")
_HANDLE_PATTERNS = {"^img_[0-9a-f]{16}$", "img_[0-9a-f]{16}"}

_INSTRUCTION = """\
You can use tools. Reply with exactly one JSON object:
- to call a tool: {{"tool": "<name>", "arguments": {{...}}}}
- to answer the user: {{"answer": "<your answer>"}}
Call a tool when it helps; after a tool result, answer the user from it.
Images are given as handles like img_0123456789abcdef; pass the handle to the tool.
Tools:
{tools}"""


def format_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """OpenAI-style function descriptions (``{"name", "description", "parameters"}``) of tools."""
    out = []
    for tool in tools:
        spec = convert_to_openai_tool(tool)
        out.append(spec.get("function", spec))
    return out


def handles_in(messages: Iterable[BaseMessage]) -> list[str]:
    """Image handles mentioned in the messages, in order of first appearance."""
    seen: dict[str, None] = {}
    for message in messages:
        text = message.content if isinstance(message.content, str) else json.dumps(message.content)
        for handle in _HANDLE.findall(text):
            seen.setdefault(handle, None)
    return list(seen)


def _narrow_handles(node: Any, handles: list[str]) -> Any:
    """Replace handle-pattern string schemas by an enum of the known handles."""
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("pattern") in _HANDLE_PATTERNS and handles:
            narrowed = {k: v for k, v in node.items() if k != "pattern"}
            narrowed["enum"] = list(handles)
            return narrowed
        return {k: _narrow_handles(v, handles) for k, v in node.items()}
    if isinstance(node, list):
        return [_narrow_handles(v, handles) for v in node]
    return node


def decision_schema(
    tools: list[dict[str, Any]],
    *,
    handles: Sequence[str] = (),
    tool_choice: str | None = None,
) -> dict[str, Any]:
    """The JSON schema of one decision: call one of ``tools`` or answer.

    Args:
        tools: Function descriptions from :func:`format_tools`.
        handles: Image handles in the conversation; handle arguments may only take these values.
        tool_choice: ``"none"`` (answer only), ``"any"``/``"required"`` (must call a tool), a tool
            name (must call that tool), or ``None``/``"auto"`` (either).
    """
    chosen = tools
    if tool_choice not in (None, "auto", "none", "any", "required"):
        chosen = [t for t in tools if t["name"] == tool_choice]
    branches: list[dict[str, Any]] = []
    if tool_choice != "none":
        for tool in chosen:
            parameters = copy.deepcopy(tool.get("parameters") or {"type": "object"})
            branches.append(
                {
                    "type": "object",
                    "properties": {
                        "tool": {"const": tool["name"]},
                        "arguments": _narrow_handles(parameters, list(handles)),
                    },
                    "required": ["tool", "arguments"],
                    "additionalProperties": False,
                }
            )
    if tool_choice in (None, "auto", "none") or not branches:
        branches.append(
            {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
                "additionalProperties": False,
            }
        )
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _signature(tool: dict[str, Any]) -> str:
    properties = (tool.get("parameters") or {}).get("properties", {})
    args = ", ".join(properties)
    return f"- {tool['name']}({args}): {tool.get('description', '').strip()}"


def with_tool_instruction(
    messages: list[BaseMessage], tools: list[dict[str, Any]]
) -> list[BaseMessage]:
    """Prepend the tool list and reply format to the system message (or add one)."""
    instruction = _INSTRUCTION.format(tools="\n".join(_signature(t) for t in tools))
    if messages and isinstance(messages[0], SystemMessage):
        head = SystemMessage(content=f"{messages[0].text}\n\n{instruction}")
        return [head, *messages[1:]]
    return [SystemMessage(content=instruction), *messages]


def new_call_id() -> str:
    """A fresh tool-call id in OpenAI's style."""
    return f"call_{uuid.uuid4().hex[:24]}"


def decision_message(raw: str, tool_names: Iterable[str], **fields: Any) -> AIMessage:
    """Turn a decision reply into an ``AIMessage`` (a tool call, or the answer as content).

    Output that is not a decision (no JSON, unknown tool) is kept as plain answer text: the
    grammar makes that rare, and the user then still sees what the model said.
    """
    try:
        value = parse_json_object(raw)
    except ValueError:
        return AIMessage(content=raw.strip(), **fields)
    name = value.get("tool")
    if isinstance(name, str) and name in set(tool_names):
        args = value.get("arguments")
        call = {"name": name, "args": args if isinstance(args, dict) else {}, "id": new_call_id()}
        return AIMessage(content="", tool_calls=[call], **fields)
    answer = value.get("answer")
    return AIMessage(content=answer if isinstance(answer, str) else raw.strip(), **fields)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


class AnswerStream:
    """Decodes the ``answer`` string of a decision while its JSON is being generated.

    Feed raw text as it arrives; :meth:`feed` returns the newly decoded answer characters (empty
    while the reply is, or might still turn out to be, a tool call).
    """

    _HEAD = re.compile(r'\s*\{\s*"answer"\s*:\s*"')
    _ESCAPES: ClassVar[dict[str, str]] = {
        '"': '"',
        "\\": "\\",
        "/": "/",
        "b": "\b",
        "f": "\f",
        "n": "\n",
        "r": "\r",
        "t": "\t",
    }

    def __init__(self) -> None:
        self.raw = ""
        self._pos: int | None = None
        self.closed = False

    @property
    def started(self) -> bool:
        """Whether the reply was recognised as an answer (its text is being streamed)."""
        return self._pos is not None

    def feed(self, text: str) -> str:
        """Add raw text; return the answer text decoded from it so far (new part only)."""
        self.raw += text
        if self._pos is None:
            match = self._HEAD.match(self.raw)
            if match is None:
                return ""
            self._pos = match.end()
        return self._decode()

    def _decode(self) -> str:
        out: list[str] = []
        assert self._pos is not None
        while not self.closed and self._pos < len(self.raw):
            ch = self.raw[self._pos]
            if ch == '"':
                self.closed = True
            elif ch != "\\":
                out.append(ch)
            else:
                escape = self.raw[self._pos + 1 : self._pos + 2]
                if not escape or (escape == "u" and len(self.raw) < self._pos + 6):
                    break  # incomplete escape: wait for more text
                if escape == "u":
                    digits = self.raw[self._pos + 2 : self._pos + 6]
                    out.append(chr(int(digits, 16)) if _is_hex(digits) else digits)
                    self._pos += 4
                else:
                    out.append(self._ESCAPES.get(escape, escape))
                self._pos += 1
            self._pos += 1
        return "".join(out)

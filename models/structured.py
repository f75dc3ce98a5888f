"""Structured output for every LLM backend: constrained generation, tolerant parsing, bounded repair.

One entry point, :func:`invoke_structured`, turns chat messages into a validated pydantic object:

* backends that constrain decoding with a JSON-schema grammar (``llamacpp``) get the schema as a
  ``response_format`` and cannot emit non-JSON;
* OpenAI-compatible backends use function calling (llama.cpp's server rejects ``json_schema``
  response formats, function calling works everywhere);
* any other chat model (transformers, scripted fakes in tests) is asked for JSON in the prompt.

Whatever comes back is parsed tolerantly (code fences, prose around the object, raw control
characters inside strings, trailing commas). When it still does not validate, the model is shown its
output and the validation error and asked again, at most ``max_repairs`` times; then
:class:`~mmagents.errors.StructuredOutputError` is raised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, Literal, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError

from mmagents.errors import StructuredOutputError

__all__ = ["Structured", "ainvoke_structured", "invoke_structured", "parse_json_object"]

M = TypeVar("M", bound=BaseModel)
Mode = Literal["grammar", "tools", "prompt"]

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


@dataclass(frozen=True)
class Structured(Generic[M]):
    """A validated result and what it cost.

    Attributes:
        value: The validated object.
        attempts: Model calls made (1 + repairs used).
        raw: The raw text (or tool-call arguments) that validated.
    """

    value: M
    attempts: int
    raw: str


#: Deepest nesting of objects and arrays accepted. Real answers nest a few levels; a reply nested
#: ~1,000 deep would make ``json.loads`` (and pydantic) raise ``RecursionError``.
MAX_DEPTH = 64


def _scan(text: str) -> tuple[str | None, int]:
    """One pass over ``text`` from its first ``{``: the first balanced ``{...}`` (honouring
    strings and escapes) and the deepest nesting of ``{``/``[`` outside strings.

    Linear in ``len(text)``: every ``{`` is matched on the same pass (a stack of open
    positions), not by a new scan per candidate start. The object returned is the one whose
    ``{`` comes first among those that close.
    """
    first = text.find("{")
    if first == -1:
        return None, 0
    braces: list[int] = []  # positions of the unclosed "{"
    brackets = deepest = 0
    best: tuple[int, int] | None = None
    in_string = escaped = False
    for i in range(first, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            braces.append(i)
            deepest = max(deepest, len(braces) + brackets)
        elif ch == "[":
            brackets += 1
            deepest = max(deepest, len(braces) + brackets)
        elif ch == "]":
            brackets = max(0, brackets - 1)
        elif ch == "}" and braces:
            start = braces.pop()
            if best is None or start < best[0]:
                best = (start, i)
            if not braces:
                break  # an outermost object closed: no earlier "{" is still open
    return (text[best[0] : best[1] + 1] if best else None), deepest


def _balanced_object(text: str) -> str | None:
    """The first balanced ``{...}`` in ``text``, honouring strings and escapes."""
    return _scan(text)[0]


def parse_json_object(text: str) -> dict[str, Any]:
    """Parse the JSON object in a model's text, tolerating the usual small-model noise.

    Raises:
        ValueError: no JSON object could be recovered, or the text nests objects and arrays
            deeper than :data:`MAX_DEPTH` (refused before parsing: it cannot crash the caller).
    """
    obj, deepest = _scan(text)
    if deepest > MAX_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    candidates = [text.strip()]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    if obj is not None:
        candidates.append(obj)
    for candidate in candidates:
        for variant in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
            try:
                # strict=False accepts raw control characters inside strings, which
                # grammar-constrained llama.cpp output can carry.
                value = json.loads(variant, strict=False)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(value, dict):
                return value
    raise ValueError("no JSON object found in the model output")


def _mode_of(llm: BaseChatModel) -> Mode:
    declared = getattr(llm, "structured_mode", None)
    if declared in ("grammar", "tools", "prompt"):
        return declared  # type: ignore[no-any-return]
    if type(llm).__name__ in {"ChatOpenAI", "AzureChatOpenAI"}:
        return "tools"
    return "prompt"


def prompt_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """``schema``'s JSON schema as a model is shown it: without the models' own descriptions.

    A pydantic model's description is its docstring, written for developers; small models copy
    it into a value (the 0.5B planner wrote the reasoner's docstring as its analysis). Field
    descriptions, written for the model, stay.
    """
    shown = schema.model_json_schema()
    shown.pop("description", None)
    for definition in shown.get("$defs", {}).values():
        if isinstance(definition, dict) and "properties" in definition:
            definition.pop("description", None)
    return shown


@cache
def _schema_instruction(schema: type[BaseModel]) -> str:
    return (
        "Answer with a single JSON object and nothing else. It must validate against this JSON "
        f"schema:\n{json.dumps(prompt_schema(schema))}"
    )


def _prepare(llm: BaseChatModel, schema: type[BaseModel], mode: Mode) -> Any:
    if mode == "grammar":
        return llm.bind(
            response_format={"type": "json_object", "schema": schema.model_json_schema()}
        )
    if mode == "tools":
        return llm.bind_tools([schema], tool_choice=schema.__name__)
    return llm


def _with_instruction(messages: list[BaseMessage], schema: type[BaseModel]) -> list[BaseMessage]:
    instruction = _schema_instruction(schema)
    if messages and isinstance(messages[0], SystemMessage):
        head = SystemMessage(content=f"{messages[0].content}\n\n{instruction}")
        return [head, *messages[1:]]
    return [SystemMessage(content=instruction), *messages]


def _raw_of(message: BaseMessage, mode: Mode) -> str:
    if mode == "tools" and isinstance(message, AIMessage) and message.tool_calls:
        return json.dumps(message.tool_calls[0]["args"])
    content = message.content
    if isinstance(content, list):  # content parts
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content)
    return str(content)


def _validate(schema: type[M], raw: str) -> M:
    return schema.model_validate(parse_json_object(raw))


def _repair_messages(raw: str, error: str) -> list[BaseMessage]:
    return [
        AIMessage(content=raw),
        HumanMessage(
            content=(
                f"That output is invalid: {error}\n"
                "Reply again with only the corrected JSON object, following the schema exactly."
            )
        ),
    ]


def _short_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'object'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


def _attempts(
    llm: BaseChatModel, schema: type[M], messages: list[BaseMessage], max_repairs: int
) -> Generator[tuple[Any, list[BaseMessage]], BaseMessage, Structured[M]]:
    """The repair loop, written once: yields (runnable, history) and is sent the model's reply."""
    mode = _mode_of(llm)
    runnable = _prepare(llm, schema, mode)
    history = messages if mode == "tools" else _with_instruction(messages, schema)
    raw, error = "", ""
    for attempt in range(1, max_repairs + 2):
        raw = _raw_of((yield runnable, history), mode)
        try:
            return Structured(_validate(schema, raw), attempt, raw)
        except (ValueError, ValidationError) as exc:
            error = _short_error(exc)
            history = [*history, *_repair_messages(raw, error)]
    raise StructuredOutputError(schema.__name__, raw, max_repairs + 1, error)


def invoke_structured(
    llm: BaseChatModel,
    schema: type[M],
    messages: list[BaseMessage],
    *,
    max_repairs: int = 2,
    config: Any = None,
) -> Structured[M]:
    """Call ``llm`` and return its answer validated as ``schema``.

    Args:
        llm: Any LangChain chat model.
        schema: The pydantic model the answer must validate against.
        messages: The conversation so far (system prompt first, if any).
        max_repairs: How many times to show the model its invalid output and ask again.
        config: A LangChain ``RunnableConfig`` passed to every call (callbacks, tags).

    Raises:
        StructuredOutputError: the output did not validate after ``1 + max_repairs`` calls.
    """
    loop = _attempts(llm, schema, messages, max_repairs)
    try:
        runnable, history = next(loop)
        while True:
            runnable, history = loop.send(runnable.invoke(history, config=config))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def ainvoke_structured(
    llm: BaseChatModel,
    schema: type[M],
    messages: list[BaseMessage],
    *,
    max_repairs: int = 2,
    config: Any = None,
) -> Structured[M]:
    """Async twin of :func:`invoke_structured` (same loop, awaited calls)."""
    loop = _attempts(llm, schema, messages, max_repairs)
    try:
        runnable, history = next(loop)
        while True:
            runnable, history = loop.send(await runnable.ainvoke(history, config=config))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]

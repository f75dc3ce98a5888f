"""The one structured-agent factory: every LLM role in :mod:`mmagents.agents` is built here.

A role is its prompt file (``prompts/<role>.yaml``), a function from its input to chat messages
and a pydantic output schema. :func:`structured_agent` turns those into a runnable with a sync and
an async path; :func:`stepwise_agent` does the same for a role that needs more than one structured
call (the rationale writer asks again when its first answer leaks the label). Either way the calls
go through :func:`~mmagents.models.structured.invoke_structured`, the one repair loop.

Like that loop, a role's logic is written once, as a generator: it yields ``(schema, messages)``
for each structured call it wants and is sent the validated :class:`Structured` answer, so the
same code serves ``invoke`` and ``ainvoke``.

>>> agent = structured_agent(llm, "questioner", schema=SubQuestions, messages=questioner_messages)
>>> agent.invoke({"question": "What animal is this?", "caption": "a cat"}).value
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from pydantic import BaseModel

from mmagents.models.structured import Structured, ainvoke_structured, invoke_structured
from mmagents.prompts import load_prompt

__all__ = ["Call", "Steps", "prompt_version", "stepwise_agent", "structured_agent"]

I = TypeVar("I")  # noqa: E741 - the conventional name of an input type variable
O = TypeVar("O")  # noqa: E741
M = TypeVar("M", bound=BaseModel)

#: One structured call a role asks for: the schema its answer must validate as, and the messages.
Call = tuple[type[BaseModel], list[BaseMessage]]
#: A role's logic: yields its calls, is sent each validated answer, returns the role's output.
Steps = Generator[Call, Structured[Any], O]


def prompt_version(role: str) -> int:
    """Version of ``prompts/<role>.yaml`` (part of the cache key of anything the role wrote)."""
    return load_prompt(role).version


def stepwise_agent(
    llm: BaseChatModel,
    role: str,
    steps: Callable[[I], Steps[O]],
    *,
    max_repairs: int = 2,
) -> Runnable[I, O]:
    """A runnable (sync and async) that drives ``steps`` against ``llm``.

    Args:
        llm: Any LangChain chat model.
        role: The role's name (the runnable's name in traces and the prompt file's name).
        steps: The role's logic for one input, as a generator of :data:`Call`.
        max_repairs: Repair attempts per structured call.

    Returns:
        A runnable whose output is the generator's return value. It raises
        :class:`~mmagents.errors.StructuredOutputError` when a call does not validate after the
        repairs, and whatever ``steps`` raises.
    """

    def run(inputs: I, config: RunnableConfig) -> O:
        plan = steps(inputs)
        try:
            schema, messages = next(plan)
            while True:
                answer = invoke_structured(
                    llm, schema, messages, max_repairs=max_repairs, config=config
                )
                schema, messages = plan.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def arun(inputs: I, config: RunnableConfig) -> O:
        plan = steps(inputs)
        try:
            schema, messages = next(plan)
            while True:
                answer = await ainvoke_structured(
                    llm, schema, messages, max_repairs=max_repairs, config=config
                )
                schema, messages = plan.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    return RunnableLambda(run, afunc=arun, name=role)


def structured_agent(
    llm: BaseChatModel,
    role: str,
    *,
    schema: type[M] | Callable[[I], type[M]],
    messages: Callable[[I], list[BaseMessage]],
    max_repairs: int = 2,
) -> Runnable[I, Structured[M]]:
    """A role that answers in one structured call (sync and async).

    Args:
        llm: Any LangChain chat model.
        role: The role's name (runnable name, prompt file).
        schema: The output schema, or a function choosing it per input (a bounded list whose size
            the input gives, answer choices as an enum).
        messages: Renders one input as chat messages.
        max_repairs: Repair attempts when the answer does not validate.

    Returns:
        A runnable mapping an input to its validated answer with the attempt count.
    """
    choose: Callable[[I], type[M]]
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        fixed = schema

        def choose(_: I) -> type[M]:
            return fixed
    else:
        choose = schema  # type: ignore[assignment]

    def one_call(inputs: I) -> Steps[Structured[M]]:
        answer: Structured[M] = yield choose(inputs), messages(inputs)
        return answer

    return stepwise_agent(llm, role, one_call, max_repairs=max_repairs)

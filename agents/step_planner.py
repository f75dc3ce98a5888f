"""The step planner (CoMM): writes the remaining steps of an interleaved how-to document.

Given a topic and the steps written so far (possibly none), it returns exactly ``n`` new steps,
each a short title and one to three sentences. The output schema is built per ``n`` with
``minItems = maxItems = n``, so a grammar-constrained backend cannot return the wrong count, and any
other backend is asked again (bounded repairs) when it does.

>>> planner = build_step_planner(llm)
>>> plan = planner.invoke({"topic": "How to brew pour-over coffee", "n": 4})
>>> [s.title for s in plan.value.steps], plan.attempts
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, partial
from typing import NotRequired, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable
from pydantic import BaseModel, Field, create_model

from mmagents.agents import factory
from mmagents.models.structured import Structured
from mmagents.prompts import render_messages

__all__ = [
    "ROLE",
    "PlannedStep",
    "StepPlan",
    "StepPlannerInput",
    "build_step_planner",
    "plan_schema",
    "prompt_version",
    "step_planner_messages",
]

ROLE = "step_planner"
#: Version of ``prompts/step_planner.yaml`` (part of cache keys).
prompt_version = partial(factory.prompt_version, ROLE)
#: Bounds keep a small model from rambling past its token budget.
MAX_TITLE_CHARS = 60
MAX_TEXT_CHARS = 200


class PlannedStep(BaseModel):
    """One step: a short title and its text."""

    title: str = Field(
        min_length=1, max_length=MAX_TITLE_CHARS, description="A few words, imperative."
    )
    text: str = Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        description="One to three sentences describing a visible action.",
    )


class StepPlannerInput(TypedDict):
    """What the planner reads: the topic, how many new steps, and the steps so far."""

    topic: str
    n: int
    previous: NotRequired[Sequence[dict[str, str]]]


class StepPlan(BaseModel):
    """The planner's answer: the new steps, in order."""

    steps: list[PlannedStep]


@cache
def plan_schema(n: int) -> type[StepPlan]:
    """A :class:`StepPlan` subclass that requires exactly ``n`` steps.

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    schema: type[StepPlan] = create_model(
        "StepPlan",
        __base__=StepPlan,
        steps=(list[PlannedStep], Field(min_length=n, max_length=n)),
    )
    return schema


def step_planner_messages(inputs: StepPlannerInput) -> list[BaseMessage]:
    """Render the from-topic or continuation prompt for ``inputs``."""
    previous = [
        {"title": p.get("title", ""), "text": p.get("text", "")} for p in inputs.get("previous", ())
    ]
    variant = "continue" if previous else "from_topic"
    return render_messages(ROLE, variant, topic=inputs["topic"], n=inputs["n"], previous=previous)


def _schema_of(inputs: StepPlannerInput) -> type[StepPlan]:
    return plan_schema(inputs["n"])


def build_step_planner(
    llm: BaseChatModel, *, max_repairs: int = 2
) -> Runnable[StepPlannerInput, Structured[StepPlan]]:
    """Build the step-planner runnable (sync and async).

    Args:
        llm: Any LangChain chat model.
        max_repairs: Repair attempts when the output does not validate.

    Returns:
        A runnable mapping :class:`StepPlannerInput` to exactly ``n`` validated steps with the
        attempt count. It raises ``ValueError`` when ``n < 1`` and
        :class:`~mmagents.errors.StructuredOutputError` after the repairs.
    """
    return factory.structured_agent(
        llm, ROLE, schema=_schema_of, messages=step_planner_messages, max_repairs=max_repairs
    )

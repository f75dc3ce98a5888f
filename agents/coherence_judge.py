"""The text-coherence judge (CoMM filtering): an LLM grades a step-by-step document on a rubric.

The rubric (``prompts/coherence_judge.yaml``) has four criteria scored 1–5: relevance to the topic,
progression (order), consistency between steps, completeness. :attr:`CoherenceScores.coherence`
is their mean mapped to [0, 1], the number the filter thresholds.

>>> judge = build_coherence_judge(llm)
>>> out = judge.invoke({"topic": "Make tea", "steps": [{"title": "Boil", "text": "Boil water."}]})
>>> out.value.coherence, out.value.reason
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Literal, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable
from pydantic import BaseModel, Field

from mmagents.agents import factory
from mmagents.models.structured import Structured
from mmagents.prompts import render_messages

__all__ = [
    "CRITERIA",
    "ROLE",
    "CoherenceScores",
    "JudgeInput",
    "build_coherence_judge",
    "judge_messages",
    "prompt_version",
]

ROLE = "coherence_judge"
#: Version of ``prompts/coherence_judge.yaml`` (part of cache keys).
prompt_version = partial(factory.prompt_version, ROLE)
CRITERIA = ("relevance", "progression", "consistency", "completeness")
#: Long steps are cut for the judge: a small model's context is a few thousand tokens.
MAX_STEP_CHARS = 600


#: An enum rather than ge/le bounds: JSON-schema grammars enforce enums, not numeric ranges.
Score = Literal[1, 2, 3, 4, 5]


class CoherenceScores(BaseModel):
    """The judge's answer: a short reason, then each criterion scored 1–5."""

    reason: str = Field(min_length=1, max_length=160, description="Why, in one sentence.")
    relevance: Score = Field(description="Every step is about the topic.")
    progression: Score = Field(description="Sensible order; each step builds on the last.")
    consistency: Score = Field(description="Steps agree: same objects and setting; no repeats.")
    completeness: Score = Field(description="The steps reach the goal; nothing missing.")

    @property
    def coherence(self) -> float:
        """Mean of the four criteria mapped from 1–5 to 0–1."""
        return (sum(getattr(self, c) for c in CRITERIA) / len(CRITERIA) - 1) / 4


class JudgeInput(TypedDict):
    """The document as the judge reads it: its topic and its steps (``title``, ``text``)."""

    topic: str
    steps: Sequence[dict[str, str]]


def judge_messages(inputs: JudgeInput) -> list[BaseMessage]:
    """Render the rubric prompt for a document (long step texts are cut)."""
    steps = [
        {"title": s.get("title", ""), "text": _cut(s.get("text", ""))} for s in inputs["steps"]
    ]
    return render_messages(ROLE, "default", topic=inputs["topic"], steps=steps)


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_STEP_CHARS else text[: MAX_STEP_CHARS - 1] + "…"


def build_coherence_judge(
    llm: BaseChatModel, *, max_repairs: int = 2
) -> Runnable[JudgeInput, Structured[CoherenceScores]]:
    """Build the judge runnable (sync and async).

    Args:
        llm: Any LangChain chat model.
        max_repairs: Repair attempts when the output does not validate.

    Returns:
        A runnable mapping :class:`JudgeInput` to validated :class:`CoherenceScores` with the
        attempt count; it raises :class:`~mmagents.errors.StructuredOutputError` after the repairs.
    """
    return factory.structured_agent(
        llm, ROLE, schema=CoherenceScores, messages=judge_messages, max_repairs=max_repairs
    )

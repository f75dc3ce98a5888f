"""The CoMM judge: an LLM scores a generated interleaved document on the paper's four criteria.

The rubric (``prompts/comm_judge.yaml``) is CoMM's (Chen et al., 2024): completeness, image
coherence, image quality and text fidelity, each 0–10 with a short justification. The input is
the document's start (or only its topic) as ``given`` and the model's continuation as ``output``,
both as text in which images appear as numbered placeholders ``<img_i>``; the images themselves,
when given as ``images`` (data URLs, in placeholder order), are attached to the user message as
image parts, as CoMM's evaluation sends them to GPT-4o (a text-only backend drops them and says
so in the prompt).

>>> judge = build_comm_judge(llm)
>>> out = judge.invoke({"given": "Topic: bake bread", "output": "(1) Mix flour. <img_0>"})
>>> out.value.completeness.score, out.value.scores()
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Literal, NotRequired, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import Runnable
from pydantic import BaseModel, Field

from mmagents.agents import factory
from mmagents.models.structured import Structured
from mmagents.prompts import render_messages

__all__ = [
    "CRITERIA",
    "ROLE",
    "CommJudgeInput",
    "CommJudgeScores",
    "Criterion",
    "build_comm_judge",
    "comm_judge_messages",
    "prompt_version",
]

ROLE = "comm_judge"
#: Version of ``prompts/comm_judge.yaml`` (part of cache keys).
prompt_version = partial(factory.prompt_version, ROLE)
#: The paper's four criteria, in the prompt's order.
CRITERIA = ("completeness", "image_coherence", "image_quality", "text_fidelity")

#: An enum rather than ge/le bounds: JSON-schema grammars enforce enums, not numeric ranges.
Score = Literal[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


class Criterion(BaseModel):
    """One criterion: why, then the 0–10 score."""

    justification: str = Field(min_length=1, max_length=300, description="Brief reason.")
    score: Score = Field(description="0-3 major issues, 4-7 minor issues, 8-10 none.")


class CommJudgeScores(BaseModel):
    """The judge's answer: the four criteria."""

    completeness: Criterion
    image_coherence: Criterion
    image_quality: Criterion
    text_fidelity: Criterion

    def scores(self) -> dict[str, int]:
        """``{criterion: score}``."""
        return {c: int(getattr(self, c).score) for c in CRITERIA}


class CommJudgeInput(TypedDict):
    """The document as the judge reads it."""

    given: str
    output: str
    images: NotRequired[Sequence[str]]


def comm_judge_messages(inputs: CommJudgeInput) -> list[BaseMessage]:
    """Render the rubric for a document; its images (data URLs) become image parts, in order."""
    messages = render_messages(ROLE, "default", given=inputs["given"], output=inputs["output"])
    images = list(inputs.get("images") or ())
    if images:
        text = str(messages[-1].content)
        parts: list[str | dict[str, object]] = [{"type": "text", "text": text}]
        for i, url in enumerate(images):
            parts.append({"type": "text", "text": f"<img_{i}>"})
            parts.append({"type": "image_url", "image_url": {"url": url}})
        messages[-1] = HumanMessage(content=parts)
    return messages


def build_comm_judge(
    llm: BaseChatModel, *, max_repairs: int = 2
) -> Runnable[CommJudgeInput, Structured[CommJudgeScores]]:
    """Build the judge runnable (sync and async).

    Args:
        llm: Any LangChain chat model (one that reads images, for the image criteria).
        max_repairs: Repair attempts when the output does not validate.

    Returns:
        A runnable mapping :class:`CommJudgeInput` to validated :class:`CommJudgeScores` with the
        attempt count; it raises :class:`~mmagents.errors.StructuredOutputError` after the repairs.
    """
    return factory.structured_agent(
        llm, ROLE, schema=CommJudgeScores, messages=comm_judge_messages, max_repairs=max_repairs
    )

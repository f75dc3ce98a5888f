"""IdealGPT's reasoner: an LLM that reads the caption and sub-answers and answers the main question.

It writes a short analysis, the more likely answer and a confidence. As in the reference code, a
reasoner that is not sure says so (here: an empty ``answer``), which sends the loop into another
round; the final round uses a variant whose schema forbids an empty answer, so the loop always ends
with a prediction. With answer choices (multiple-choice VQA, VCR, SNLI-VE) the answer is one of the
choices, enforced by the schema (a JSON enum under grammar-constrained decoding).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache, partial
from typing import Annotated, Any, ClassVar, Literal, NotRequired, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable
from pydantic import BaseModel, Field, StringConstraints, create_model, field_validator

from mmagents.agents import factory
from mmagents.agents.questioner import SubAnswer
from mmagents.models.structured import Structured
from mmagents.prompts import render_messages

__all__ = [
    "ROLE",
    "ReasonerInput",
    "Reasoning",
    "build_reasoner",
    "match_choice",
    "prompt_version",
    "reasoner_messages",
    "reasoning_schema",
]

ROLE = "reasoner"
#: Version of ``prompts/reasoner.yaml``.
prompt_version = partial(factory.prompt_version, ROLE)

# Bounded strings: a grammar then has to close them, so a rambling small model still emits JSON.
Analysis = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=400)]
OpenAnswer = Annotated[str, StringConstraints(strip_whitespace=True, max_length=80)]
ForcedAnswer = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]

_INDEX = re.compile(r"^(?:answer|option|choice)?\s*#?\s*(\d+)\s*[.):]?$", re.IGNORECASE)


def match_choice(text: str, choices: Sequence[str]) -> str | None:
    """Map a model's answer onto one of ``choices``, or ``None`` when it names none (or several).

    Accepts the choice itself (any case), its 1-based number ("2", "Answer 2"), or a text that
    mentions exactly one choice as a whole word.
    """
    clean = text.strip().strip(".").strip()
    if not clean:
        return None
    lowered = clean.lower()
    for choice in choices:
        if choice.strip().lower() == lowered:
            return choice
    if (index := _INDEX.match(clean)) and 1 <= int(index[1]) <= len(choices):
        return choices[int(index[1]) - 1]
    mentioned = [c for c in choices if re.search(rf"\b{re.escape(c.strip().lower())}\b", lowered)]
    return mentioned[0] if len(mentioned) == 1 else None


class ReasonerInput(TypedDict):
    """What the reasoner reads: every sub-question asked so far (all rounds) with its answer."""

    question: str
    caption: str
    sub_answers: Sequence[SubAnswer]
    choices: NotRequired[Sequence[str] | None]
    final: NotRequired[bool]


class Reasoning(BaseModel):
    """The reasoner's output. An empty ``answer`` means "we are not sure" (never in the final round)."""

    # No field descriptions: the prompt explains the fields, and small models copy a description
    # into the value ("answer": "the more likely answer").
    analysis: Analysis
    answer: OpenAnswer
    confidence: float = Field(ge=0.0, le=1.0)

    #: The answer choices this schema accepts (empty: open-ended).
    choices: ClassVar[tuple[str, ...]] = ()

    @field_validator("confidence", mode="before")
    @classmethod
    def _percent_to_fraction(cls, value: Any) -> Any:
        # Models often write 85 for 0.85; a percentage is unambiguous, anything larger is rejected.
        if isinstance(value, int | float) and 1 < value <= 100:
            return value / 100
        return value

    @field_validator("answer", mode="before")
    @classmethod
    def _snap_to_choice(cls, value: Any) -> Any:
        # Prompt-mode models write "Answer 2" or change case; grammar mode already emits a choice.
        if cls.choices and isinstance(value, str) and value.strip():
            return match_choice(value, cls.choices) or value
        return value


@cache
def reasoning_schema(choices: tuple[str, ...] = (), final: bool = False) -> type[Reasoning]:
    """The reasoner's schema for open-ended or multiple-choice questions, normal or final round.

    The final-round schema requires a non-empty answer: the reference forces an educated guess.
    """
    if not choices:
        if not final:
            return Reasoning
        answer: Any = (ForcedAnswer, ...)
    else:
        allowed = choices if final else (*choices, "")
        answer = (Literal[allowed], ...)  # type: ignore[valid-type]
    model = create_model("Reasoning", __base__=Reasoning, answer=answer)
    model.choices = choices
    return model


def reasoner_messages(inputs: ReasonerInput) -> list[BaseMessage]:
    """Render the normal or final-round prompt for ``inputs``."""
    return render_messages(
        ROLE,
        "final_round" if inputs.get("final") else "normal",
        question=inputs["question"],
        caption=inputs["caption"],
        choices=list(inputs.get("choices") or []),
        sub_answers=list(inputs["sub_answers"]),
    )


def _schema_of(inputs: ReasonerInput) -> type[Reasoning]:
    return reasoning_schema(tuple(inputs.get("choices") or ()), bool(inputs.get("final")))


def build_reasoner(
    llm: BaseChatModel, *, max_repairs: int = 2
) -> Runnable[ReasonerInput, Structured[Reasoning]]:
    """Build the reasoner runnable (sync and async).

    Args:
        llm: Any LangChain chat model.
        max_repairs: Repair attempts when the output does not validate.

    Returns:
        A runnable mapping :class:`ReasonerInput` to a validated :class:`Reasoning` (schema chosen
        by the input's choices and ``final`` flag) with its attempt count. It raises
        :class:`~mmagents.errors.StructuredOutputError` after the repairs.
    """
    return factory.structured_agent(
        llm, ROLE, schema=_schema_of, messages=reasoner_messages, max_repairs=max_repairs
    )

"""IdealGPT's questioner: an LLM that breaks a visual question into sub-questions for a VQA model.

It never sees the image, only an (imperfect) caption and, after the first round, the sub-questions
asked so far with their answers and the reasoner's analysis of why they did not suffice. The output
is a short, bounded JSON list, so grammar-constrained decoding keeps even a 135M model on schema.

>>> questioner = build_questioner(llm, max_sub_questions=3)
>>> out = questioner.invoke({"question": "What animal is this?", "caption": "a cat on a rug"})
>>> out.value.sub_questions, out.attempts
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from functools import cache, partial
from typing import Annotated, Any, NotRequired, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable
from pydantic import BaseModel, Field, StringConstraints, create_model, field_validator

from mmagents.agents import factory
from mmagents.models.structured import Structured
from mmagents.prompts import render_messages

__all__ = [
    "ROLE",
    "QuestionerInput",
    "SubAnswer",
    "SubQuestions",
    "build_questioner",
    "prompt_version",
    "questioner_messages",
    "sub_questions_schema",
    "without_main_question",
]

ROLE = "questioner"
#: Version of ``prompts/questioner.yaml``.
prompt_version = partial(factory.prompt_version, ROLE)

#: Bounded so that a grammar forces the string to close before ``max_tokens`` runs out.
SubQuestion = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=120)]


class SubAnswer(TypedDict):
    """A sub-question and the VQA model's answer to it."""

    question: str
    answer: str


class QuestionerInput(TypedDict):
    """What the questioner reads.

    ``sub_answers`` and ``analysis`` are empty in the first round; later rounds get every
    sub-question asked so far, with its answer, and the reasoner's latest analysis.
    """

    question: str
    caption: str
    choices: NotRequired[Sequence[str] | None]
    sub_answers: NotRequired[Sequence[SubAnswer]]
    analysis: NotRequired[str | None]


class SubQuestions(BaseModel):
    """The questioner's output: one to three short sub-questions for the VQA model."""

    sub_questions: list[SubQuestion] = Field(min_length=1, max_length=3)

    @field_validator("sub_questions")
    @classmethod
    def _drop_repeats(cls, questions: list[str]) -> list[str]:
        # Small models often repeat one question; asking the VQA model twice buys nothing.
        seen: set[str] = set()
        unique = []
        for question in questions:
            if question.lower() not in seen:
                seen.add(question.lower())
                unique.append(question)
        return unique


@cache
def sub_questions_schema(max_sub_questions: int) -> type[SubQuestions]:
    """The output schema allowing at most ``max_sub_questions`` sub-questions (cached per size)."""
    if max_sub_questions < 1:
        raise ValueError(f"max_sub_questions must be >= 1, got {max_sub_questions}")
    if max_sub_questions == 3:
        return SubQuestions
    bounded = (list[SubQuestion], Field(min_length=1, max_length=max_sub_questions))
    model: type[SubQuestions] = create_model(
        "SubQuestions", __base__=SubQuestions, sub_questions=bounded
    )
    return model


def questioner_messages(inputs: QuestionerInput, *, max_sub_questions: int) -> list[BaseMessage]:
    """Render the first-round or later-round prompt for ``inputs``."""
    sub_answers = list(inputs.get("sub_answers") or [])
    variant = "later_round" if sub_answers else "first_round"
    extra: dict[str, Any] = {}
    if sub_answers:
        extra = {"sub_answers": sub_answers, "analysis": inputs.get("analysis") or ""}
    return render_messages(
        ROLE,
        variant,
        question=inputs["question"],
        caption=inputs["caption"],
        choices=list(inputs.get("choices") or []),
        max_sub_questions=max_sub_questions,
        **extra,
    )


def build_questioner(
    llm: BaseChatModel, *, max_sub_questions: int = 3, max_repairs: int = 2
) -> Runnable[QuestionerInput, Structured[SubQuestions]]:
    """Build the questioner runnable (sync and async).

    Args:
        llm: Any LangChain chat model.
        max_sub_questions: Upper bound on sub-questions per round (enforced by the schema).
        max_repairs: Repair attempts when the output does not validate.

    Returns:
        A runnable mapping :class:`QuestionerInput` to a validated :class:`SubQuestions` with
        its attempt count. It raises :class:`~mmagents.errors.StructuredOutputError` after the
        repairs.
    """
    schema = sub_questions_schema(max_sub_questions)
    render = partial(questioner_messages, max_sub_questions=max_sub_questions)

    def one_call(inputs: QuestionerInput) -> factory.Steps[Structured[SubQuestions]]:
        answer: Structured[SubQuestions] = yield schema, render(inputs)
        return without_main_question(answer, inputs["question"])

    return factory.stepwise_agent(llm, ROLE, one_call, max_repairs=max_repairs)


def _normalised(question: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", question.lower()).split())


def without_main_question(out: Structured[SubQuestions], question: str) -> Structured[SubQuestions]:
    """Drop sub-questions that only restate the main question, when others remain.

    Small planners often copy the user's question into the list; the VQA model answering the
    whole question is the single-shot baseline, not a decomposition. If the main question is all
    the model asked, it is kept (the round still gets an answer to reason on).
    """
    main = _normalised(question)
    kept = [q for q in out.value.sub_questions if _normalised(q) != main]
    if not kept or len(kept) == len(out.value.sub_questions):
        return out
    return replace(out, value=out.value.model_copy(update={"sub_questions": kept}))

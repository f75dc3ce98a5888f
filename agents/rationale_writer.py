"""The ``rationale_writer`` role: Mr.Harm's abductive rationale for one meme.

At training time the teacher LLM is given the gold label and explains why the meme could carry it,
*without stating it* (Lin et al., EMNLP Findings 2023): the student must learn the reasoning, not
copy the answer out of its target text. So every rationale is checked for label leaks
(:func:`find_label_leaks`); a leaking one is sent back once with a rewrite request, and whatever
still leaks after that is cut out sentence by sentence (:func:`strip_label_mentions`).

The meme's text and caption are untrusted: they are delimited as data in the prompt (tags removed
from the data first), and the answer is a JSON object with one key, ``rationale``. Instructions
planted in a meme cannot change the label (it is an input, never read back from the model) nor the
output format (the schema is enforced, extra keys are dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, NotRequired, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmagents.agents import factory
from mmagents.agents._label_leak import find_label_leaks, strip_label_mentions
from mmagents.agents._untrusted import untrusted
from mmagents.errors import RationaleLeakError
from mmagents.memes import LABELS
from mmagents.models.structured import Structured
from mmagents.prompts import render_messages

__all__ = [
    "LABELS",
    "ROLE",
    "MemeRationale",
    "RationaleInput",
    "RationaleResult",
    "build_rationale_writer",
    "find_label_leaks",
    "prompt_version",
    "rationale_messages",
    "strip_label_mentions",
    "write_rationale",
]

ROLE = "rationale_writer"
#: Version of ``prompts/rationale_writer.yaml`` (part of rationale cache keys).
prompt_version = partial(factory.prompt_version, ROLE)
_TAGS = ("meme_text", "image_caption")
MIN_CHARS = 20
MAX_CHARS = 2000


class MemeRationale(BaseModel):
    """The writer's answer: the rationale only (the label is never an output)."""

    model_config = ConfigDict(extra="ignore")

    rationale: str = Field(description="3 to 5 sentences")

    # Length is checked here rather than as minLength/maxLength in the JSON schema: llama.cpp
    # compiles those into a grammar with one rule per character and refuses lengths this large.
    @field_validator("rationale")
    @classmethod
    def _substantial(cls, value: str) -> str:
        text = value.strip()
        if len(text) < MIN_CHARS:
            raise ValueError(f"the rationale must be at least {MIN_CHARS} characters")
        return text[:MAX_CHARS]


@dataclass(frozen=True)
class RationaleResult:
    """A validated, label-free rationale and how it was obtained.

    Attributes:
        rationale: The rationale text (no label terms left in it).
        llm_calls: Model calls made (structured-output repairs and the leak rewrite included).
        leak_rewritten: The first answer leaked the label and the model was asked to rewrite it.
        leak_stripped: Leaking sentences were cut out of the final answer.
    """

    rationale: str
    llm_calls: int
    leak_rewritten: bool = False
    leak_stripped: bool = False


class RationaleInput(TypedDict):
    """One meme: its text (OCR) and caption, both untrusted, and the gold label if known."""

    text: str
    caption: str
    label: NotRequired[str | None]


def rationale_messages(text: str, caption: str, label: str | None = None) -> list[BaseMessage]:
    """The chat messages for one meme (variant ``with_label`` when ``label`` is given).

    Raises:
        ValueError: ``label`` is neither ``"harmful"`` nor ``"harmless"``.
    """
    data = {"text": untrusted(text, _TAGS), "caption": untrusted(caption, _TAGS)}
    if label is None:
        return render_messages(ROLE, "without_label", **data)
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    return render_messages(ROLE, "with_label", label=label, **data)


def _steps(inputs: RationaleInput) -> factory.Steps[RationaleResult]:
    """Ask once; on a label leak ask for one rewrite; cut what still leaks."""
    messages = rationale_messages(inputs["text"], inputs["caption"], inputs.get("label"))
    first: Structured[MemeRationale] = yield MemeRationale, messages
    rationale, calls = first.value.rationale.strip(), first.attempts
    leaks = find_label_leaks(rationale)
    if not leaks:
        return RationaleResult(rationale, calls)
    # One rewrite: the model sees its answer and which terms gave the verdict away.
    repair = render_messages(ROLE, "repair_leak", terms=", ".join(dict.fromkeys(leaks)))
    retry: Structured[MemeRationale] = yield (
        MemeRationale,
        [*messages, AIMessage(content=first.raw), *repair],
    )
    rationale, calls = retry.value.rationale.strip(), calls + retry.attempts
    if not find_label_leaks(rationale):
        return RationaleResult(rationale, calls, leak_rewritten=True)
    stripped = strip_label_mentions(rationale)
    if not stripped:
        raise RationaleLeakError(rationale, find_label_leaks(rationale))
    return RationaleResult(stripped, calls, leak_rewritten=True, leak_stripped=True)


def build_rationale_writer(
    llm: BaseChatModel, *, max_repairs: int = 2
) -> Runnable[RationaleInput, RationaleResult]:
    """Build the rationale writer (sync and async): a label-free abductive rationale per meme.

    Args:
        llm: A LangChain chat model (the ``llm`` role).
        max_repairs: Structured-output repairs per call.

    Returns:
        A runnable mapping :class:`RationaleInput` to a :class:`RationaleResult`. It raises
        ``ValueError`` for a label other than harmful/harmless,
        :class:`~mmagents.errors.StructuredOutputError` when no valid JSON answer came after the
        repairs and :class:`~mmagents.errors.RationaleLeakError` when every sentence of the
        rewritten answer still states the label.
    """
    return factory.stepwise_agent(llm, ROLE, _steps, max_repairs=max_repairs)


def write_rationale(
    llm: Any,
    text: str,
    caption: str,
    label: str | None = None,
    *,
    max_repairs: int = 2,
    config: Any = None,
) -> RationaleResult:
    """The rationale of one meme: :func:`build_rationale_writer` invoked once.

    Args:
        llm: A LangChain chat model (the ``llm`` role).
        text: The meme's text (OCR), untrusted.
        caption: The image caption, untrusted.
        label: The gold label (training time); ``None`` for a verdict-free explanation.
        max_repairs: Structured-output repairs per call.
        config: LangChain ``RunnableConfig`` for the calls.

    Raises:
        StructuredOutputError: no valid JSON answer after the repairs.
        RationaleLeakError: every sentence of the rewritten answer still states the label.
    """
    writer = build_rationale_writer(llm, max_repairs=max_repairs)
    return writer.invoke(RationaleInput(text=text, caption=caption, label=label), config)

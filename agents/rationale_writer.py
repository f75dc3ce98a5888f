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
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmagents.agents._label_leak import find_label_leaks, strip_label_mentions
from mmagents.agents._untrusted import untrusted
from mmagents.errors import RationaleLeakError
from mmagents.models.structured import invoke_structured
from mmagents.prompts import load_prompt, render_messages

__all__ = [
    "LABELS",
    "ROLE",
    "MemeRationale",
    "RationaleResult",
    "find_label_leaks",
    "prompt_version",
    "rationale_messages",
    "strip_label_mentions",
    "write_rationale",
]

ROLE = "rationale_writer"
LABELS = ("harmful", "harmless")
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


def prompt_version() -> int:
    """Version of ``prompts/rationale_writer.yaml`` (part of rationale cache keys)."""
    return load_prompt(ROLE).version


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


def write_rationale(
    llm: Any,
    text: str,
    caption: str,
    label: str | None = None,
    *,
    max_repairs: int = 2,
    config: Any = None,
) -> RationaleResult:
    """Ask ``llm`` for the abductive rationale of one meme, free of label statements.

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
    messages = rationale_messages(text, caption, label)
    first = invoke_structured(llm, MemeRationale, messages, max_repairs=max_repairs, config=config)
    rationale, calls = first.value.rationale.strip(), first.attempts
    leaks = find_label_leaks(rationale)
    if not leaks:
        return RationaleResult(rationale, calls)
    # One rewrite: the model sees its answer and which terms gave the verdict away.
    repair = render_messages(ROLE, "repair_leak", terms=", ".join(dict.fromkeys(leaks)))
    retry = invoke_structured(
        llm,
        MemeRationale,
        [*messages, AIMessage(content=first.raw), *repair],
        max_repairs=max_repairs,
        config=config,
    )
    rationale, calls = retry.value.rationale.strip(), calls + retry.attempts
    if not find_label_leaks(rationale):
        return RationaleResult(rationale, calls, leak_rewritten=True)
    stripped = strip_label_mentions(rationale)
    if not stripped:
        raise RationaleLeakError(rationale, find_label_leaks(rationale))
    return RationaleResult(stripped, calls, leak_rewritten=True, leak_stripped=True)

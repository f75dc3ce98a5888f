"""The ``cue_writer`` role: RECODE's composite visual cues for one relation predicate.

For "SUBJECT PREDICATE OBJECT" between two (super-)categories, one structured LLM call returns
subject, object and spatial cues, then a short reasoning step followed by the weight of each kind
of cue (the schema orders ``reasoning`` before ``weights`` so the model reasons first), and whether
the relation is plausible at all for these categories.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, NotRequired, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmagents.agents import factory
from mmagents.agents._output import clean_phrases, compact_schema
from mmagents.models.structured import Structured
from mmagents.prompts import render_messages

__all__ = [
    "ROLE",
    "CueInput",
    "CueWeights",
    "RelationCues",
    "build_cue_writer",
    "cue_messages",
    "prompt_version",
]

ROLE = "cue_writer"
#: Version of ``prompts/cue_writer.yaml`` (part of every cue cache key).
prompt_version = partial(factory.prompt_version, ROLE)
MAX_CUES = 3
MAX_CHARS = 60

Cue = Annotated[str, Field(min_length=1, max_length=MAX_CHARS)]
CueList = Annotated[list[Cue], Field(min_length=1, max_length=MAX_CUES)]
# Unbounded on purpose: llama.cpp grammars do not enforce numeric bounds, the offline 135M model
# writes weights like 2.5, and the graph normalises the three weights (negatives count as 0).
Weight = float


class CueWeights(BaseModel):
    """How much each kind of cue matters (asked for in [0, 1]; the graph normalises them)."""

    model_config = ConfigDict(json_schema_extra=compact_schema)

    subject: Weight
    object: Weight
    spatial: Weight


class RelationCues(BaseModel):
    """The cue writer's answer for one (predicate, subject category, object category).

    Field order matters: ``reasoning`` comes before ``weights``, so a model decoding left to right
    reasons about the predicate before it commits to the weights (the paper's reasoning step).
    """

    model_config = ConfigDict(json_schema_extra=compact_schema)

    subject_cues: CueList
    object_cues: CueList
    spatial_cues: CueList
    reasoning: Annotated[str, Field(max_length=160)]
    weights: CueWeights
    plausible: bool

    @field_validator("subject_cues", "object_cues", "spatial_cues", mode="before")
    @classmethod
    def _tidy(cls, value: Any) -> Any:
        return clean_phrases(value)


class CueInput(TypedDict):
    """The relation "``subject`` ``predicate`` ``object``" between two (super-)categories.

    ``n_cues`` is how many cues per kind the prompt asks for (default 3; the schema caps at
    :data:`MAX_CUES`).
    """

    predicate: str
    subject: str
    object: str
    n_cues: NotRequired[int]


def cue_messages(inputs: CueInput) -> list[BaseMessage]:
    """Render the prompt for one (predicate, subject category, object category)."""
    return render_messages(
        ROLE,
        "default",
        predicate=inputs["predicate"],
        subject=inputs["subject"],
        object=inputs["object"],
        n_cues=inputs.get("n_cues", 3),
    )


def build_cue_writer(
    llm: BaseChatModel, *, max_repairs: int = 2
) -> Runnable[CueInput, Structured[RelationCues]]:
    """Build the cue writer (sync and async).

    Args:
        llm: A LangChain chat model (the ``llm`` role).
        max_repairs: Repair attempts when the output does not validate.

    Returns:
        A runnable mapping :class:`CueInput` to validated :class:`RelationCues` with the attempt
        count; it raises :class:`~mmagents.errors.StructuredOutputError` after the repairs.
    """
    return factory.structured_agent(
        llm, ROLE, schema=RelationCues, messages=cue_messages, max_repairs=max_repairs
    )

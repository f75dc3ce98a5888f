"""The ``cue_writer`` role: RECODE's composite visual cues for one relation predicate.

For "SUBJECT PREDICATE OBJECT" between two (super-)categories, one structured LLM call returns
subject, object and spatial cues, then a short reasoning step followed by the weight of each kind
of cue (the schema orders ``reasoning`` before ``weights`` so the model reasons first), and whether
the relation is plausible at all for these categories.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmagents.agents._output import clean_phrases, compact_schema
from mmagents.models.structured import Structured, invoke_structured
from mmagents.prompts import load_prompt, render_messages

__all__ = ["ROLE", "CueWeights", "RelationCues", "prompt_version", "write_cues"]

ROLE = "cue_writer"
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


def prompt_version() -> int:
    """Version of ``prompts/cue_writer.yaml`` (part of every cue cache key)."""
    return load_prompt(ROLE).version


def write_cues(
    llm: Any,
    predicate: str,
    subject: str,
    object_: str,
    *,
    n_cues: int = 3,
    config: Any = None,
) -> Structured[RelationCues]:
    """Ask ``llm`` for the cues of "``subject`` ``predicate`` ``object_``".

    Args:
        llm: A LangChain chat model (the ``llm`` role).
        predicate: The relation predicate ("sitting on").
        subject: Subject (super-)category ("animal").
        object_: Object (super-)category ("furniture").
        n_cues: Cues asked for per kind (the schema caps at :data:`MAX_CUES`).
        config: LangChain ``RunnableConfig`` for the call.

    Raises:
        StructuredOutputError: the answer did not validate after the repairs.
    """
    messages = render_messages(
        ROLE, "default", predicate=predicate, subject=subject, object=object_, n_cues=n_cues
    )
    return invoke_structured(llm, RelationCues, messages, config=config)

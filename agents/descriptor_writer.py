"""The ``descriptor_writer`` role: visual descriptors of a class name (Menon & Vondrick, 2023).

One structured LLM call per class returns a short list of noun phrases ("a long tail", "black or
grey") that a CLIP-like scorer can check; :mod:`mmagents.graphs.describe` turns them into
"{class}, which has {descriptor}" texts and averages their scores.

The prompt is the paper's question without its few-shot examples: with grammar-constrained
decoding, the offline 135M model copied the examples (a tabby cat became a "four-limbed
primate") or the schema's wording, while the bare question gave relevant, if thin, features.
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
    "DescriptorInput",
    "Descriptors",
    "build_descriptor_writer",
    "descriptor_messages",
    "prompt_version",
]

ROLE = "descriptor_writer"
#: Version of ``prompts/descriptor_writer.yaml`` (part of every descriptor cache key).
prompt_version = partial(factory.prompt_version, ROLE)
#: Bounds the grammar enforces, so a small model cannot ramble past its token budget.
MIN_DESCRIPTORS = 2
MAX_DESCRIPTORS = 8
MAX_CHARS = 80

Descriptor = Annotated[str, Field(min_length=1, max_length=MAX_CHARS)]


class Descriptors(BaseModel):
    """The descriptor writer's answer: visual features of one class."""

    model_config = ConfigDict(json_schema_extra=compact_schema)

    # The field name is part of what the model reads: "visual_features" tells it what to write.
    visual_features: list[Descriptor] = Field(
        min_length=MIN_DESCRIPTORS, max_length=MAX_DESCRIPTORS
    )

    @field_validator("visual_features", mode="before")
    @classmethod
    def _tidy(cls, value: Any) -> Any:
        # Small models repeat themselves and add bullets; an all-empty list triggers a repair.
        return clean_phrases(value)


class DescriptorInput(TypedDict):
    """The class to describe, and how many descriptors the prompt asks for (default 3 to 6)."""

    class_name: str
    min_items: NotRequired[int]
    max_items: NotRequired[int]


def descriptor_messages(inputs: DescriptorInput) -> list[BaseMessage]:
    """Render the prompt for one class (the schema still allows 2 to :data:`MAX_DESCRIPTORS`)."""
    return render_messages(
        ROLE,
        "default",
        class_name=inputs["class_name"],
        min_items=inputs.get("min_items", 3),
        max_items=inputs.get("max_items", 6),
    )


def build_descriptor_writer(
    llm: BaseChatModel, *, max_repairs: int = 2
) -> Runnable[DescriptorInput, Structured[Descriptors]]:
    """Build the descriptor writer (sync and async).

    Args:
        llm: A LangChain chat model (the ``llm`` role).
        max_repairs: Repair attempts when the output does not validate.

    Returns:
        A runnable mapping :class:`DescriptorInput` to validated :class:`Descriptors` with the
        attempt count; it raises :class:`~mmagents.errors.StructuredOutputError` after the repairs.
    """
    return factory.structured_agent(
        llm, ROLE, schema=Descriptors, messages=descriptor_messages, max_repairs=max_repairs
    )

"""The ``descriptor_writer`` role: visual descriptors of a class name (Menon & Vondrick, 2023).

One structured LLM call per class returns a short list of noun phrases ("a long tail", "black or
grey") that a CLIP-like scorer can check; :mod:`mmagents.graphs.describe` turns them into
"{class}, which has {descriptor}" texts and averages their scores.

The prompt is the paper's question without its few-shot examples: with grammar-constrained
decoding, the offline 135M model copied the examples (a tabby cat became a "four-limbed
primate") or the schema's wording, while the bare question gave relevant, if thin, features.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmagents.agents._output import clean_phrases, compact_schema
from mmagents.models.structured import Structured, invoke_structured
from mmagents.prompts import load_prompt, render_messages

__all__ = ["ROLE", "Descriptors", "prompt_version", "write_descriptors"]

ROLE = "descriptor_writer"
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


def prompt_version() -> int:
    """Version of ``prompts/descriptor_writer.yaml`` (part of every descriptor cache key)."""
    return load_prompt(ROLE).version


def write_descriptors(
    llm: Any, class_name: str, *, min_items: int = 3, max_items: int = 6, config: Any = None
) -> Structured[Descriptors]:
    """Ask ``llm`` for the visual descriptors of ``class_name``.

    Args:
        llm: A LangChain chat model (the ``llm`` role).
        class_name: The class, as a user would name it ("tabby cat").
        min_items: Fewest descriptors asked for in the prompt (the schema requires 2).
        max_items: Most descriptors asked for (the schema caps at :data:`MAX_DESCRIPTORS`).
        config: LangChain ``RunnableConfig`` for the call (callbacks, tags).

    Raises:
        StructuredOutputError: the answer did not validate after the repairs.
    """
    messages = render_messages(
        ROLE, "default", class_name=class_name, min_items=min_items, max_items=max_items
    )
    return invoke_structured(llm, Descriptors, messages, config=config)

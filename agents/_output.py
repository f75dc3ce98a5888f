"""Output-schema helpers of the cue-writing roles (descriptor writer, cue writer)."""

from __future__ import annotations

from typing import Any

__all__ = ["clean_phrases", "compact_schema"]


def clean_phrases(items: Any) -> Any:
    """Strip bullets, whitespace and full stops; drop empties and case-insensitive repeats.

    Runs before the schema's own checks, so a stray empty item is dropped rather than failing the
    whole answer; anything that is not a list of strings is returned for the schema to reject.

    Raises:
        ValueError: nothing is left (so structured-output validation asks the model again).
    """
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        return items
    kept: dict[str, str] = {}
    for item in items:
        text = item.strip().lstrip("-*• ").strip().rstrip(".").strip()
        if text and text.lower() not in kept:
            kept[text.lower()] = text
    if not kept:
        raise ValueError("the list must contain at least one non-empty phrase")
    return list(kept.values())


def compact_schema(schema: dict[str, Any]) -> None:
    """Drop titles and descriptions from a JSON schema (pydantic ``json_schema_extra`` hook).

    The schema is shown to the model; a 135M model copies docstrings and titles into its answer
    ("The descriptor writer's answer: ...") instead of answering, so it sees only the structure.
    """
    schema.pop("title", None)
    schema.pop("description", None)
    for child in schema.get("properties", {}).values():
        child.pop("title", None)

"""A client's ``response_format: json_schema`` as a pydantic model, for the structured-output path.

The subset that answers use: objects with ``properties`` / ``required``, ``string``, ``integer``,
``number``, ``boolean``, ``array`` (with ``items``), ``enum`` of strings or numbers, nested objects.
Anything else (``$ref``, ``oneOf``, pattern properties ...) is refused, naming the place, so a
client learns at once instead of getting an answer that ignores part of its schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model

__all__ = ["UnsupportedSchema", "model_of"]

_SCALARS: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}
_IGNORED = {"description", "title", "default", "examples", "$schema"}


class UnsupportedSchema(ValueError):
    """The schema uses a feature outside the supported subset (the message names where)."""


def _type_of(schema: Any, where: str, depth: int) -> Any:
    if not isinstance(schema, dict):
        raise UnsupportedSchema(f"{where}: a schema must be an object")
    if depth > 8:
        raise UnsupportedSchema(f"{where}: nested deeper than 8 levels")
    unknown = set(schema) - _IGNORED - {"type", "properties", "required", "items", "enum"}
    unknown -= {"additionalProperties"}
    if unknown:
        raise UnsupportedSchema(f"{where}: unsupported keyword(s) {sorted(unknown)}")
    if "enum" in schema:
        values = schema["enum"]
        if not values or not all(isinstance(v, str | int | float) for v in values):
            raise UnsupportedSchema(f"{where}: enum must list strings or numbers")
        return Literal[tuple(values)]
    kind = schema.get("type")
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array":
        return list[_type_of(schema.get("items", {"type": "string"}), f"{where}.items", depth + 1)]  # type: ignore[misc]
    if kind == "object":
        return _object(schema, where, depth + 1)
    raise UnsupportedSchema(f"{where}: unsupported type {kind!r}")


def _object(schema: dict[str, Any], where: str, depth: int) -> type[BaseModel]:
    properties = schema.get("properties") or {}
    if not isinstance(properties, dict) or not properties:
        raise UnsupportedSchema(f"{where}: an object needs properties")
    required = set(schema.get("required") or [])
    fields: dict[str, Any] = {}
    for name, sub in properties.items():
        annotation = _type_of(sub, f"{where}.{name}", depth)
        fields[name] = (annotation, ...) if name in required else (annotation | None, None)
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        "Answer", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


def model_of(json_schema: dict[str, Any]) -> type[BaseModel]:
    """The pydantic model of ``response_format.json_schema`` (its ``schema`` member).

    Raises:
        UnsupportedSchema: the schema is not an object schema of the supported subset.
    """
    schema = json_schema.get("schema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise UnsupportedSchema("json_schema.schema must be an object schema")
    return _object(schema, "schema", 0)

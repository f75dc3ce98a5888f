"""Helpers shared by the converters: reading JSON Lines sources and resolving image paths."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmagents.errors import ConfigError, DatasetError

__all__ = ["check_options", "find_file", "read_json", "require"]


def check_options(name: str, options: Mapping[str, Any], allowed: set[str]) -> None:
    """Reject an option this converter does not take (a misspelt option is an error)."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ConfigError(f"converter {name}: unknown option(s) {unknown}; known: {known}")


def find_file(src: Path, names: list[str], what: str) -> Path:
    """``src`` itself when it is a file, else the first of ``names`` under ``src``.

    Raises:
        DatasetError: nothing found (the message lists what was looked for).
    """
    if src.is_file():
        return src
    for name in names:
        if (src / name).is_file():
            return src / name
    raise DatasetError(src, f"no {what} found (looked for {', '.join(names)})")


def require(record: Mapping[str, Any], fields: list[str], path: Path, line: int) -> None:
    """Raise a :class:`DatasetError` naming ``file:line`` when a field is missing."""
    missing = [f for f in fields if f not in record]
    if missing:
        raise DatasetError(path, f"missing field(s) {', '.join(map(repr, missing))}", line)


def read_json(path: Path) -> Any:
    """The JSON document at ``path``; an unreadable or malformed file is a DatasetError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(path, f"unreadable JSON: {err}") from None

"""Reading JSONL files line by line, with errors that name the file and line (core: the data
readers of every layer share it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmagents.errors import DatasetError

__all__ = ["iter_jsonl"]


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of a JSONL file.

    Raises:
        DatasetError: invalid UTF-8, invalid JSON, JSON nested too deep to parse, or a non-object
            line, naming ``file:line``; an unreadable file.
    """
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DatasetError(path, f"cannot read: {exc.strerror or exc}") from None
    with handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(
                    path, f"invalid UTF-8 at byte {exc.start} of the line", line_no
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    path, f"invalid JSON: {exc.msg} (column {exc.colno})", line_no
                ) from None
            except RecursionError:
                raise DatasetError(path, "JSON nested too deep to read", line_no) from None
            if not isinstance(record, dict):
                raise DatasetError(
                    path, f"expected a JSON object, got {type(record).__name__}", line_no
                )
            yield line_no, record

"""Converters from the papers' distributed dataset formats to the harness's task JSONL.

One lazy table, :data:`CONVERTERS`, maps a name to ``"module:function"``; nothing is imported
until a converter runs. A converter reads the distributed files and returns a
:class:`Conversion` (the records plus notes on what it decided: counts, dropped lines, the
duplicate-id policy); :func:`convert` writes the records as JSONL. ``mmagents eval convert NAME
SRC --out FILE [--split S] [--dataset D]`` is the command line over the same function::

    from mmagents.eval.convert import convert

    result = convert("mrharm", "Mr.Harm/Data", "harmc_train.jsonl", dataset="harmc", split="train")
    print(result.notes)            # {'n': ..., 'duplicate_ids': ..., ...}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmagents._registry import import_string
from mmagents.errors import ConfigError

__all__ = ["CONVERTERS", "Conversion", "convert", "converter", "write_records"]

#: name -> "module:function"; a converter is ``fn(src: Path, *, split, dataset, **options)``.
CONVERTERS: dict[str, str] = {
    "vcr": "mmagents.eval.convert.vcr:convert",
    "snli-ve": "mmagents.eval.convert.snli_ve:convert",
    "imagenet": "mmagents.eval.convert.imagenet:convert",
    "mrharm": "mmagents.eval.convert.mrharm:convert",
    "vg150": "mmagents.eval.convert.vg150:convert",
    "gqa200": "mmagents.eval.convert.gqa200:convert",
    "comm": "mmagents.eval.convert.comm:convert",
    "relations-vg": "mmagents.eval.convert.relations:convert_vg",
    "relations-gqa": "mmagents.eval.convert.relations:convert_gqa",
    "relations-fixture": "mmagents.eval.convert.relations:convert_fixture",
}


@dataclass
class Conversion:
    """What a converter produced: task records and notes on the choices it made."""

    records: list[dict[str, Any]]
    notes: dict[str, Any] = field(default_factory=dict)


def converter(name: str) -> Callable[..., Conversion]:
    """The converter function registered as ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    try:
        target = CONVERTERS[name]
    except KeyError:
        known = ", ".join(sorted(CONVERTERS))
        raise ConfigError(f"unknown converter {name!r}; known: {known}") from None
    fn = import_string(target)
    if not callable(fn):
        raise ConfigError(f"converter {name!r} ({target}) is not callable")
    return fn  # type: ignore[no-any-return]


def convert(
    name: str,
    src: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    dataset: str | None = None,
    **options: Any,
) -> Conversion:
    """Convert ``src`` with converter ``name`` and write the records to ``out`` (JSONL).

    Raises:
        ConfigError: unknown converter or option.
        DatasetError: unreadable or malformed source files (naming file and line).
    """
    result = converter(name)(Path(src).expanduser(), split=split, dataset=dataset, **options)
    write_records(result.records, Path(out).expanduser())
    result.notes.setdefault("n", len(result.records))
    return result


def write_records(records: Iterable[Mapping[str, Any]], out: Path) -> None:
    """Write ``records`` as JSONL atomically (a half-written file never replaces a good one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(partial, out)

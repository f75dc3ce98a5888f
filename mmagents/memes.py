"""Memes as data: the one harmful/harmless label vocabulary, :class:`MemeExample` and its readers.

Harm-C and Harm-P grade memes "not harmful" / "somewhat harmful" / "very harmful", FHM uses 0/1
("hateful"), other sets say "offensive" or "benign". Every layer reads labels through
:func:`normalise_label` — the training data (:mod:`mmagents.finetune.meme_data`), the students
(:mod:`mmagents.models.memes`), the teacher's prompt (:mod:`mmagents.agents.rationale_writer`) and
the harness normaliser of task ``meme-harmful`` (:func:`mmagents.eval.normalize.meme_label`) — so a
label one of them accepts is never unknown to another.

Records follow the shared Harm-C / Harm-P / FHM layout: ``id``, ``text`` (OCR), ``caption``
(ClipCap), ``label`` and, for training sets with a teacher, ``rationale``; an ``image`` path is
resolved against the file's folder. Teacher rationales may also come from a separate file in the
published format, a JSON object ``{id: rationale}`` (what ``mmagents run meme --data FILE
--rationales-out OUT`` writes); JSONL with ``id`` + ``rationale`` works too.

Core: only the standard library and :mod:`mmagents.errors` are imported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmagents._jsonl import iter_jsonl
from mmagents.errors import DatasetError

__all__ = [
    "HARMFUL",
    "HARMLESS",
    "LABELS",
    "SYNONYMS",
    "MemeExample",
    "label_index",
    "load_rationale_file",
    "normalise_label",
    "read_memes",
]

HARMFUL = "harmful"
HARMLESS = "harmless"
#: Class order of every student and classifier: index 1 is the positive class.
LABELS: tuple[str, str] = (HARMLESS, HARMFUL)

#: Canonical label → the spellings the datasets use for it (compared stripped and lower-cased).
SYNONYMS: dict[str, tuple[str, ...]] = {
    HARMFUL: (
        "very harmful",
        "somewhat harmful",
        "partially harmful",
        "hateful",
        "offensive",
        "1",
    ),
    HARMLESS: ("not harmful", "not hateful", "not offensive", "benign", "0"),
}

_TABLE = {
    spelling: canonical
    for canonical, spellings in SYNONYMS.items()
    for spelling in (canonical, *spellings)
}


def normalise_label(value: Any) -> str:
    """``"harmful"`` or ``"harmless"`` from any label spelling the meme datasets use.

    Raises:
        ValueError: an unknown label (booleans included: ``True`` is not a label).
    """
    if not isinstance(value, bool):
        canonical = _TABLE.get(str(value).strip().lower())
        if canonical is not None:
            return canonical
    raise ValueError(f"unknown meme label {value!r}; known: {', '.join(sorted(_TABLE))}")


def label_index(label: str) -> int:
    """Position of ``label`` in :data:`LABELS` (1 for harmful)."""
    return LABELS.index(normalise_label(label))


@dataclass(frozen=True)
class MemeExample:
    """One meme as a student sees it (text + caption) and what it learns from (label, rationale)."""

    id: str
    text: str
    caption: str
    label: str | None = None
    rationale: str | None = None
    #: Path of the meme image, when the data has one (the t5-clip student reads it).
    image: str | None = None


def read_memes(
    path: str | Path,
    *,
    require_label: bool = True,
    rationales: Mapping[str, str] | None = None,
) -> list[MemeExample]:
    """Read a meme JSONL file.

    Args:
        path: The ``.jsonl`` file.
        require_label: Fail on records without a valid label (training and evaluation data).
        rationales: Teacher rationales by id, overriding the records' own ``rationale`` fields.

    Raises:
        DatasetError: missing file, invalid JSON, a missing ``text``, a bad label or duplicate ids,
            naming the file and line.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise DatasetError(file, "data file not found")
    examples: list[MemeExample] = []
    seen: set[str] = set()
    for number, record in iter_jsonl(file):
        meme_id = str(record.get("id", f"{file.stem}:{number}"))
        if meme_id in seen:
            raise DatasetError(file, f"duplicate id {meme_id!r}", number)
        seen.add(meme_id)
        if not isinstance(record.get("text"), str):
            raise DatasetError(file, "field 'text' (the meme's OCR text) is missing", number)
        label = record.get("label")
        if label is not None or require_label:
            try:
                label = normalise_label(label)
            except ValueError as exc:
                raise DatasetError(file, str(exc), number) from None
        rationale = (rationales or {}).get(meme_id, record.get("rationale"))
        examples.append(
            MemeExample(
                id=meme_id,
                text=record["text"],
                caption=str(record.get("caption") or ""),
                label=label,
                rationale=str(rationale) if rationale else None,
                image=_image_path(record.get("image"), file.parent),
            )
        )
    return examples


def _image_path(value: object, base: Path) -> str | None:
    """An image field resolved against the data file's folder (``None`` when absent)."""
    if not isinstance(value, str) or not value:
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def load_rationale_file(path: str | Path) -> dict[str, str]:
    """Teacher rationales ``{id: text}`` from a JSON object file or a JSONL file (id + rationale).

    Raises:
        DatasetError: missing or malformed file.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise DatasetError(file, "rationale file not found")
    if file.suffix == ".jsonl":
        return {
            str(r["id"]): str(r["rationale"]) for _, r in iter_jsonl(file) if r.get("rationale")
        }
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(file, f"invalid JSON: {exc.msg}", exc.lineno) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise DatasetError(file, "a rationale file must be a JSON object {id: rationale text}")
    return {str(k): v for k, v in data.items()}

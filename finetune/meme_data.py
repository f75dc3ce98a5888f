"""Meme datasets for distillation: JSONL records, teacher rationales, seeded stratified splits.

Records follow the shared Harm-C / Harm-P / FHM layout: ``id``, ``text`` (OCR), ``caption``
(ClipCap), ``label`` (``harmful`` / ``harmless``; the spellings of
:mod:`mmagents.agents.meme_labels` such as ``"somewhat harmful"`` and 0/1 are accepted) and, for
training sets with a teacher, ``rationale``. Teacher rationales may also come from a separate file in the published format, a JSON object ``{id: rationale}`` (what
:func:`mmagents.graphs.meme.write_rationales` writes); JSONL with ``id`` + ``rationale`` works too.

Only the standard library is imported here: the training code runs where pydantic/langchain are
absent (a bare GPU machine with torch and transformers).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mmagents.agents.meme_labels import LABELS, normalise_label
from mmagents.errors import DatasetError
from mmagents.eval.datasets import iter_jsonl

__all__ = [
    "LABELS",
    "MemeExample",
    "fingerprint",
    "label_index",
    "load_rationale_file",
    "normalise_label",
    "read_memes",
    "sanitise_rationales",
    "stratified_split",
    "write_memes",
]


@dataclass(frozen=True)
class MemeExample:
    """One meme as the student sees it (text + caption) and what it learns from (label, rationale)."""

    id: str
    text: str
    caption: str
    label: str | None = None
    rationale: str | None = None
    #: Path of the meme image, when the data has one (the t5-clip student reads it).
    image: str | None = None


def label_index(label: str) -> int:
    """Position of ``label`` in :data:`LABELS` (1 for harmful)."""
    return LABELS.index(normalise_label(label))


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


def sanitise_rationales(examples: Sequence[MemeExample]) -> tuple[list[MemeExample], int]:
    """Cut the sentences that state the label out of every teacher rationale.

    Published gpt-3.5 rationales usually end with the verdict ("... the meme is not harmful"): a
    student trained on them would learn the label from its rationale target. A rationale whose
    every sentence states the label is dropped (that example trains on its label alone).

    Returns:
        The examples with clean rationales, and how many rationales were dropped entirely.
    """
    from mmagents.agents._label_leak import strip_label_mentions

    cleaned, dropped = [], 0
    for example in examples:
        if example.rationale is None:
            cleaned.append(example)
            continue
        text = strip_label_mentions(example.rationale)
        dropped += not text
        cleaned.append(replace(example, rationale=text or None))
    return cleaned, dropped


def stratified_split(
    examples: Sequence[MemeExample], fraction: float, seed: int
) -> tuple[list[MemeExample], list[MemeExample]]:
    """Split off ``fraction`` of each label, seeded: returns ``(rest, held_out)`` in input order.

    Raises:
        ValueError: ``fraction`` not in (0, 1).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    by_label: dict[str | None, list[int]] = {}
    for index, example in enumerate(examples):
        by_label.setdefault(example.label, []).append(index)
    rng = random.Random(seed)
    held: set[int] = set()
    for label in sorted(by_label, key=str):
        indices = by_label[label]
        rng.shuffle(indices)
        held.update(indices[: round(len(indices) * fraction)])
    rest = [e for i, e in enumerate(examples) if i not in held]
    return rest, [e for i, e in enumerate(examples) if i in held]


def write_memes(path: str | Path, examples: Iterable[MemeExample]) -> Path:
    """Write examples as meme JSONL (the format :func:`read_memes` reads)."""
    file = Path(path).expanduser()
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("w", encoding="utf-8") as handle:
        for e in examples:
            record = {"id": e.id, "text": e.text, "caption": e.caption, "label": e.label}
            if e.rationale:
                record["rationale"] = e.rationale
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return file


def fingerprint(examples: Sequence[MemeExample], *, with_rationales: bool) -> str:
    """A short hash of the training data (ids, inputs, labels and, if used, rationales)."""
    digest = hashlib.sha256()
    for e in examples:
        parts = [e.id, e.text, e.caption, e.label or ""]
        if with_rationales:
            parts.append(e.rationale or "")
        digest.update(json.dumps(parts).encode())
    return digest.hexdigest()[:16]

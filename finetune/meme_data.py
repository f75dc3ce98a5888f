"""Meme datasets for distillation: teacher-rationale cleaning, seeded stratified splits, writing.

The data types and readers every layer shares — :class:`MemeExample`, :func:`read_memes`,
:func:`load_rationale_file` and the one label vocabulary (:data:`LABELS`, :func:`normalise_label`,
:func:`label_index`) — live in core, :mod:`mmagents.memes`, and are re-exported here so training
code and older imports keep one path. What only training needs stays in this module.

Only the standard library is imported here: the training code runs where pydantic/langchain are
absent (a bare GPU machine with torch and transformers).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from mmagents.memes import (
    LABELS,
    MemeExample,
    label_index,
    load_rationale_file,
    normalise_label,
    read_memes,
)

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

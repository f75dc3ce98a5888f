"""The harmful/harmless label vocabulary of the meme datasets, written once.

Harm-C and Harm-P grade memes "not harmful" / "somewhat harmful" / "very harmful", FHM uses 0/1
("hateful"), other sets say "offensive" or "benign". Training data (:mod:`mmagents.finetune.meme_data`),
the teacher's prompt (:mod:`mmagents.agents.rationale_writer`) and the harness normaliser of task
``meme-harmful`` (:func:`mmagents.eval.normalize.meme_label`) all read this table, so a label one of
them accepts is never unknown to another. Only the standard library is imported: training code
runs where pydantic/langchain are absent.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HARMFUL", "HARMLESS", "LABELS", "SYNONYMS", "normalise_label"]

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

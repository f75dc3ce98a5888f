"""SNLI-VE (Xie et al., 2019) to task JSONL, as IdealGPT's SNLI-VE runs read it.

Source layout (the distributed files)::

    SRC/snli_ve_{train,dev,test}.jsonl   pairID, Flikr30kID ("2248275918.jpg", the format's own
                                         spelling), sentence1 (the Flickr30k caption), sentence2
                                         (the hypothesis), gold_label
    SRC/flickr30k_images/<Flikr30kID>    the premise image (``--set images=DIR`` elsewhere)

Records: ``id`` (pairID), ``image``, ``hypothesis`` (also as ``question``, the field the IdealGPT
graph reads), ``choices`` = ``["entailment", "neutral", "contradiction"]`` in the order IdealGPT
lists them, and ``answer`` (gold_label). SNLI's premise caption ``sentence1`` is not copied: the
image is the premise, and IdealGPT captions it itself. Lines without a gold label (``"-"`` or
empty) are dropped and counted in the notes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmagents.errors import ConfigError, DatasetError
from mmagents.eval.convert import Conversion
from mmagents.eval.convert._common import check_options, find_file, require
from mmagents.eval.datasets import iter_jsonl

__all__ = ["CHOICES", "convert"]

#: IdealGPT's choice order for SNLI-VE (blip_gpt_main.py passes exactly this list).
CHOICES = ["entailment", "neutral", "contradiction"]
_SPLITS = {"train": "train", "dev": "dev", "val": "dev", "test": "test"}


def convert(
    src: Path, *, split: str | None = None, dataset: str | None = None, **options: Any
) -> Conversion:
    """Convert ``snli_ve_{split}.jsonl`` (default ``dev``; ``val`` is an alias) under ``src``.

    Options:
        images: The Flickr30k image folder (default ``SRC/flickr30k_images``).

    Raises:
        ConfigError: an unknown option or split.
        DatasetError: a missing field or image, or an unknown gold label.
    """
    check_options("snli-ve", options, {"images"})
    name = _SPLITS.get(split or "dev")
    if name is None:
        raise ConfigError(f"snli-ve: split must be one of {sorted(_SPLITS)}, got {split!r}")
    path = find_file(src, [f"snli_ve_{name}.jsonl"], f"SNLI-VE {name} file")
    base = path.parent if src.is_file() else src
    images = Path(options.get("images") or base / "flickr30k_images").expanduser()
    records, unlabelled = [], 0
    for line, raw in iter_jsonl(path):
        require(raw, ["pairID", "Flikr30kID", "sentence2", "gold_label"], path, line)
        gold = str(raw["gold_label"]).strip().lower()
        if gold in ("", "-"):
            unlabelled += 1
            continue
        if gold not in CHOICES:
            raise DatasetError(path, f"unknown gold_label {raw['gold_label']!r}", line)
        image = images / str(raw["Flikr30kID"])
        if not image.is_file():
            raise DatasetError(path, f"image file not found: {image}", line)
        hypothesis = str(raw["sentence2"]).strip()
        records.append(
            {
                "id": str(raw["pairID"]),
                "image": str(image.resolve()),
                "hypothesis": hypothesis,
                "question": hypothesis,
                "choices": list(CHOICES),
                "answer": gold,
            }
        )
    notes = {"source": str(path), "split": name, "dropped_without_gold_label": unlabelled}
    return Conversion(records, notes)

"""VCR (Zellers et al., 2019) Q->A annotations to task JSONL, as IdealGPT's VCR runs read them.

Source layout (the distributed ``vcr1annots`` + ``vcr1images``)::

    SRC/val.jsonl                      one question per line: annot_id, img_fn, metadata_fn,
                                       objects, question, answer_choices, answer_label, ...
    SRC/vcr1images/<img_fn>            the image
    SRC/vcr1images/<metadata_fn>       {"boxes": [[x1, y1, x2, y2, score], ...], "width", "height"}

Questions and answers are token lists in which an object tag is a list of indices into
``objects`` (``["What", "is", [0], "doing", "?"]``). IdealGPT feeds the LLM plain text, so each
tag is rewritten to its category plus, when the image holds more than one object of that
category, its horizontal place: the box centre in the left, middle or right third of the image
(``"person on the left"``, ``"person in the middle"``, ``"person on the right"``). Several
indices in one tag are joined with "and".

Records: ``id`` (annot_id), ``image``, ``question``, ``choices`` (four texts), ``answer`` (the
correct choice's text), ``answer_number`` (``"1"``..``"4"``: ``answer_label + 1``, the choice
number IdealGPT's reasoner outputs and its scorer compares against) and ``answer_label`` (VCR's
0-based index, kept for reference).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmagents.errors import ConfigError, DatasetError
from mmagents.eval.convert import Conversion
from mmagents.eval.convert._common import check_options, find_file, require
from mmagents.eval.datasets import iter_jsonl

__all__ = ["convert", "detokenize", "object_phrase", "position_word"]

_FIELDS = ["annot_id", "img_fn", "metadata_fn", "objects", "question", "answer_choices"]
_NO_SPACE_BEFORE = re.compile(r" (?=[?.!,;:)]|'s\b|n't\b|'re\b|'ll\b|'ve\b|'m\b|'d\b)")


def position_word(box: Sequence[float], width: float) -> str:
    """``"on the left"``, ``"in the middle"`` or ``"on the right"``: where the box centre lies.

    The image is cut into three equal vertical bands; a centre exactly on a band edge belongs to
    the band on its right.
    """
    centre = (float(box[0]) + float(box[2])) / 2.0
    if centre < width / 3.0:
        return "on the left"
    if centre < 2.0 * width / 3.0:
        return "in the middle"
    return "on the right"


def object_phrase(index: int, objects: Sequence[str], boxes: Sequence[Any], width: float) -> str:
    """The words for object ``index``: its category, placed when the category repeats."""
    category = str(objects[index])
    if sum(1 for o in objects if o == category) == 1:
        return category
    return f"{category} {position_word(boxes[index], width)}"


def _join(phrases: list[str]) -> str:
    if len(phrases) <= 2:
        return " and ".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def detokenize(
    tokens: Sequence[Any], objects: Sequence[str], boxes: Sequence[Any], width: float
) -> str:
    """Plain text from VCR tokens, object tags rewritten by :func:`object_phrase`."""
    words: list[str] = []
    for token in tokens:
        if isinstance(token, list):
            words.append(_join([object_phrase(int(i), objects, boxes, width) for i in token]))
        else:
            words.append(str(token))
    return _NO_SPACE_BEFORE.sub("", " ".join(words)).strip()


def _metadata(images: Path, record: dict[str, Any], path: Path, line: int) -> tuple[list, float]:
    meta_path = images / str(record["metadata_fn"])
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        boxes, width = meta["boxes"], float(meta["width"])
    except FileNotFoundError:
        raise DatasetError(path, f"metadata file not found: {meta_path}", line) from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DatasetError(meta_path, f"bad VCR metadata ({exc})") from None
    if len(boxes) < len(record["objects"]):
        raise DatasetError(path, f"{meta_path} has fewer boxes than objects", line)
    return boxes, width


def convert(
    src: Path, *, split: str | None = None, dataset: str | None = None, **options: Any
) -> Conversion:
    """Convert VCR ``{split}.jsonl`` (default ``val``) under ``src`` (or ``src`` itself).

    Options:
        images: The image folder (default ``SRC/vcr1images``).

    Raises:
        ConfigError: an unknown option or split.
        DatasetError: a missing field, image or metadata file (naming file and line).
    """
    check_options("vcr", options, {"images"})
    split = split or "val"
    if split not in ("train", "val"):
        raise ConfigError(
            f"vcr: split must be train or val (test labels are held out), got {split}"
        )
    path = find_file(src, [f"{split}.jsonl"], f"VCR {split} annotations")
    base = path.parent if src.is_file() else src
    images = Path(options.get("images") or base / "vcr1images").expanduser()
    records = []
    for line, raw in iter_jsonl(path):
        require(raw, [*_FIELDS, "answer_label"], path, line)
        boxes, width = _metadata(images, raw, path, line)
        image = images / str(raw["img_fn"])
        if not image.is_file():
            raise DatasetError(path, f"image file not found: {image}", line)
        objects = [str(o) for o in raw["objects"]]
        choices = [detokenize(c, objects, boxes, width) for c in raw["answer_choices"]]
        label = int(raw["answer_label"])
        if not 0 <= label < len(choices):
            raise DatasetError(
                path, f"answer_label {label} outside the {len(choices)} choices", line
            )
        records.append(
            {
                "id": str(raw["annot_id"]),
                "image": str(image.resolve()),
                "question": detokenize(raw["question"], objects, boxes, width),
                "choices": choices,
                "answer": choices[label],
                "answer_number": str(label + 1),
                "answer_label": label,
            }
        )
    return Conversion(records, {"source": str(path), "split": split, "label_offset": 1})

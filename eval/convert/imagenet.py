"""ImageNet validation (ILSVRC-2012) to task JSONL, labelled as classification by description does.

Menon & Vondrick read the validation set with torchvision's ``ImageNet(split="val")`` — class
index ``i`` is the ``i``-th WordNet id in sorted order — and name class ``i`` by the ``i``-th key
of the descriptor file (``label_to_classname = list(gpt_descriptions.keys())``). This converter
applies the same mapping, so every label is exactly a descriptor-file key. Those keys cannot be
folder names ("baluster / handrail", "cardboard box / carton"), which is why the harness reads
ImageNet from JSONL rather than ``root/<class>/``.

Two distributed layouts are read::

    SRC/val/<wnid>/<image>.JPEG        torchvision / valprep.sh layout (also SRC/<wnid>/ directly)
    SRC/<image>.JPEG + labels FILE     flat folder; FILE lines "<image name> <class index>"
                                       (the 0-based sorted-wnid index of Caffe's val.txt)

Records: ``id`` (the image file name), ``image``, ``label`` (descriptor key), ``class_index`` and,
in the folder layout, ``wnid``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mmagents.errors import ConfigError, DatasetError
from mmagents.eval.convert import Conversion
from mmagents.eval.convert._common import check_options
from mmagents.eval.datasets import IMAGE_SUFFIXES

__all__ = ["class_names", "convert"]

_WNID = re.compile(r"^n\d{8}$")


def class_names(descriptors: str | Path) -> list[str]:
    """The class names of a descriptor file, in file order (the class index order).

    Raises:
        DatasetError: unreadable file, or not a JSON object of class -> list.
    """
    path = Path(descriptors).expanduser()
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(path, f"cannot read descriptor file ({exc})") from None
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        raise DatasetError(path, "a descriptor file maps class names to lists of descriptors")
    return list(table)


def _from_folders(root: Path, names: list[str]) -> list[dict[str, Any]]:
    wnids = sorted(p.name for p in root.iterdir() if p.is_dir() and _WNID.match(p.name))
    if len(wnids) != len(names):
        raise DatasetError(
            root, f"{len(wnids)} WordNet-id folders but {len(names)} classes in the descriptors"
        )
    records = []
    for index, wnid in enumerate(wnids):
        for image in sorted((root / wnid).iterdir()):
            if image.suffix.lower() in IMAGE_SUFFIXES:
                records.append(
                    {
                        "id": image.name,
                        "image": str(image.resolve()),
                        "label": names[index],
                        "class_index": index,
                        "wnid": wnid,
                    }
                )
    return records


def _from_labels(root: Path, labels: Path, names: list[str]) -> list[dict[str, Any]]:
    records = []
    try:
        lines = labels.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(labels, f"cannot read labels file ({exc})") from None
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise DatasetError(labels, "expected '<image name> <class index>'", line_no)
        index = int(parts[1])
        if index >= len(names):
            raise DatasetError(labels, f"class index {index} >= {len(names)} classes", line_no)
        image = root / parts[0]
        if not image.is_file():
            raise DatasetError(labels, f"image file not found: {image}", line_no)
        records.append(
            {
                "id": image.name,
                "image": str(image.resolve()),
                "label": names[index],
                "class_index": index,
            }
        )
    return records


def convert(
    src: Path, *, split: str | None = None, dataset: str | None = None, **options: Any
) -> Conversion:
    """Convert the ImageNet validation images under ``src``.

    Options:
        descriptors: The descriptor JSON whose keys name the classes (required; e.g. the
            published ``descriptors_imagenet.json``).
        labels: A ``<image> <index>`` file for the flat layout.

    Raises:
        ConfigError: no descriptor file, an unknown option, or a split other than ``val``.
        DatasetError: folders or labels that do not match the descriptor file.
    """
    check_options("imagenet", options, {"descriptors", "labels"})
    if (split or "val") != "val":
        raise ConfigError(f"imagenet: only the validation split is converted, got {split!r}")
    if not options.get("descriptors"):
        raise ConfigError("imagenet: pass --set descriptors=FILE (its keys name the classes)")
    names = class_names(options["descriptors"])
    root = src / "val" if (src / "val").is_dir() else src
    if not root.is_dir():
        raise DatasetError(src, "ImageNet folder not found")
    if options.get("labels"):
        records = _from_labels(root, Path(options["labels"]).expanduser(), names)
    else:
        records = _from_folders(root, names)
    if not records:
        raise DatasetError(root, "no images found")
    notes = {"source": str(root), "classes": len(names), "descriptors": str(options["descriptors"])}
    return Conversion(records, notes)

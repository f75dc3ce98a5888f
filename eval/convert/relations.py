"""Relation datasets for the ``relations`` eval task: VG / GQA converters and a bundled fixture.

(Moved here from ``graphs/recode_data.py``: graphs hold pipelines, not data conversion.)

The harness reads JSONL; each line is one subject–object pair (the predicate-classification
setting: boxes and categories given, predicates ranked)::

    {"id": "2345:0", "image": "images/2345.jpg",
     "subject": {"category": "man", "box": [x1, y1, x2, y2]},
     "object": {"category": "horse", "box": [x1, y1, x2, y2]},
     "label": ["riding", "on"], "predicates": ["above", "on", "riding", ...]}

``label`` is the list of gold predicates of the pair (Recall@K counts how many are in the top K),
``predicates`` the candidates (the dataset's predicate vocabulary unless given). Converters:

* Visual Genome ``relationships.json`` (a list of ``{"image_id", "relationships": [{"predicate",
  "subject": {"name" | "names", "x", "y", "w", "h"}, "object": {...}}]}``), images
  ``<image dir>/<image_id>.jpg``;
* GQA ``*_sceneGraphs.json`` (``{image_id: {"objects": {id: {"name", "x", "y", "w", "h",
  "relations": [{"name", "object"}]}}}}``), images ``<image dir>/<image_id>.jpg``.

:func:`build_relations_fixture` composites the bundled photos (the cat on, next to, under and far
above the coffee cup) at known positions and writes them in the VG layout, so tests exercise the
same converter as real data::

    mmagents eval convert relations-vg relationships.json --set images=DIR --out rel.jsonl
    mmagents eval convert relations-gqa val_sceneGraphs.json --set images=DIR --out rel.jsonl
    mmagents eval convert relations-fixture DIR --out DIR/relations.jsonl

(``--set predicates=a,b,c`` fixes the candidates; default: every predicate in the file.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmagents.errors import DatasetError
from mmagents.eval.convert import Conversion
from mmagents.eval.convert._common import check_options, read_json

if TYPE_CHECKING:
    from mmagents._config import Config

__all__ = [
    "FIXTURE_PREDICATES",
    "build_relations_fixture",
    "convert_fixture",
    "convert_gqa",
    "convert_vg",
    "samples_from_gqa",
    "samples_from_vg",
    "write_jsonl",
]

#: Candidate predicates of the bundled fixture.
FIXTURE_PREDICATES = ["on", "next to", "under", "above"]


def _name(entity: Mapping[str, Any]) -> str:
    names = entity.get("names")
    name = entity.get("name") or (names[0] if isinstance(names, list) and names else None)
    if not name:
        raise ValueError("entity has no name")
    return " ".join(str(name).lower().split())


def _box(entity: Mapping[str, Any]) -> list[float]:
    x, y, w, h = (float(entity[k]) for k in ("x", "y", "w", "h"))
    return [x, y, x + max(w, 1.0), y + max(h, 1.0)]


def _pairs_to_samples(
    records: Iterable[tuple[str, str, dict[str, Any], dict[str, Any], str]],
    predicates: Sequence[str] | None,
) -> list[dict[str, Any]]:
    """Group (image id, image, subject, object, predicate) records into one sample per pair."""
    grouped: dict[tuple[Any, ...], dict[str, Any]] = {}
    for image_id, image, subject, object_, predicate in records:
        key = (image_id, subject["category"], *subject["box"], object_["category"], *object_["box"])
        sample = grouped.setdefault(
            key,
            {"id": f"{image_id}:{len(grouped)}", "image": image, "subject": subject,
             "object": object_, "label": []},
        )  # fmt: skip
        if predicate not in sample["label"]:
            sample["label"].append(predicate)
    samples = list(grouped.values())
    vocabulary = (
        list(predicates) if predicates else sorted({p for s in samples for p in s["label"]})
    )
    for sample in samples:
        sample["predicates"] = vocabulary
    return samples


def samples_from_vg(
    path: str | Path, image_dir: str | Path, *, predicates: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Samples from a Visual Genome ``relationships.json``.

    Raises:
        DatasetError: unreadable file or a malformed relationship (named by image id).
    """
    path, image_dir = Path(path), Path(image_dir)
    data = read_json(path)
    if not isinstance(data, list):
        raise DatasetError(path, "expected a list of images with 'relationships'")
    records = []
    for entry in data:
        image_id = str(entry.get("image_id"))
        image = str(image_dir / entry.get("image", f"{image_id}.jpg"))
        for rel in entry.get("relationships", []):
            try:
                subject = {"category": _name(rel["subject"]), "box": _box(rel["subject"])}
                object_ = {"category": _name(rel["object"]), "box": _box(rel["object"])}
                predicate = " ".join(str(rel["predicate"]).lower().split())
            except (KeyError, TypeError, ValueError) as exc:
                raise DatasetError(path, f"image {image_id}: bad relationship ({exc})") from None
            records.append((image_id, image, subject, object_, predicate))
    return _pairs_to_samples(records, predicates)


def samples_from_gqa(
    path: str | Path, image_dir: str | Path, *, predicates: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Samples from a GQA scene-graph file (``{image_id: {"objects": {...}}}``).

    Raises:
        DatasetError: unreadable file or a relation pointing at a missing object.
    """
    path, image_dir = Path(path), Path(image_dir)
    data = read_json(path)
    if not isinstance(data, dict):
        raise DatasetError(path, "expected a mapping of image ids to scene graphs")
    records = []
    for image_id, graph in data.items():
        objects = graph.get("objects", {})
        image = str(image_dir / f"{image_id}.jpg")
        for obj in objects.values():
            for rel in obj.get("relations", []):
                target = objects.get(str(rel.get("object")))
                if target is None:
                    raise DatasetError(path, f"image {image_id}: relation to unknown object")
                subject = {"category": _name(obj), "box": _box(obj)}
                object_ = {"category": _name(target), "box": _box(target)}
                predicate = " ".join(str(rel["name"]).lower().split())
                records.append((str(image_id), image, subject, object_, predicate))
    return _pairs_to_samples(records, predicates)


def write_jsonl(samples: Iterable[Mapping[str, Any]], out: str | Path) -> Path:
    """Write samples as JSONL; image paths under the file's folder are made relative to it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent.resolve()
    with out.open("w", encoding="utf-8") as handle:
        for sample in samples:
            record = dict(sample)
            image = Path(record["image"]).resolve()
            if image.is_relative_to(base):
                record["image"] = os.path.relpath(image, base)
            handle.write(json.dumps(record) + "\n")
    return out


# -- the bundled fixture ---------------------------------------------------------------------------

#: (predicate, cup box, cat box) on a 640x480 canvas; the cat is the subject, the cup the object.
_SCENES: list[tuple[str, tuple[int, int, int, int], tuple[int, int, int, int]]] = [
    ("on", (220, 300, 420, 433), (245, 212, 395, 312)),
    ("next to", (330, 300, 530, 433), (150, 333, 300, 433)),
    ("under", (220, 60, 420, 193), (245, 200, 395, 300)),
    ("above", (220, 340, 420, 473), (245, 10, 395, 110)),
]


def build_relations_fixture(folder: str | Path, config: Config | None = None) -> Path:
    """Composite the sample photos into relation scenes; write images and a VG-layout JSON.

    Returns:
        The path of ``relationships.json`` (images lie next to it, as ``<image_id>.jpg``).
    """
    from PIL import Image

    from mmagents.samples import sample_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with (
        Image.open(sample_path("cat", config)) as cat_file,
        Image.open(sample_path("coffee", config)) as cup_file,
    ):
        cat, cup = cat_file.convert("RGB"), cup_file.convert("RGB")
    entries = []
    for index, (predicate, cup_box, cat_box) in enumerate(_SCENES):
        canvas = Image.new("RGB", (640, 480), (236, 232, 224))
        for photo, box in ((cup, cup_box), (cat, cat_box)):  # the subject drawn last, on top
            size = (box[2] - box[0], box[3] - box[1])
            canvas.paste(photo.resize(size, Image.Resampling.BILINEAR), box[:2])
        image_id = f"scene{index}"
        canvas.save(folder / f"{image_id}.jpg", quality=90)
        entries.append(
            {"image_id": image_id, "relationships": [{
                "predicate": predicate,
                "subject": {"name": "cat", **_xywh(cat_box)},
                "object": {"name": "cup", **_xywh(cup_box)},
            }]}
        )  # fmt: skip
    out = folder / "relationships.json"
    out.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    return out


def _xywh(box: Sequence[int]) -> dict[str, int]:
    return {"x": box[0], "y": box[1], "w": box[2] - box[0], "h": box[3] - box[1]}


# -- the converter table's entries (``mmagents eval convert relations-*``) --------------------


def _predicates(options: Mapping[str, Any]) -> list[str] | None:
    value = options.get("predicates")
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else list(value)
    return [" ".join(str(n).lower().split()) for n in names if str(n).strip()] or None


def _conversion(samples: list[dict[str, Any]], source: Path) -> Conversion:
    return Conversion(samples, {"source": str(source), "pairs": len(samples)})


def convert_vg(
    src: Path, *, split: str | None = None, dataset: str | None = None, **options: Any
) -> Conversion:
    """A Visual Genome ``relationships.json`` (``src``) to relations JSONL.

    Options:
        images: The folder of ``<image_id>.jpg`` (default: the file's folder).
        predicates: Comma-separated candidates (default: every predicate in the file).
    """
    check_options("relations-vg", options, {"images", "predicates"})
    images = Path(options.get("images") or src.parent)
    return _conversion(samples_from_vg(src, images, predicates=_predicates(options)), src)


def convert_gqa(
    src: Path, *, split: str | None = None, dataset: str | None = None, **options: Any
) -> Conversion:
    """A GQA scene-graph file (``src``) to relations JSONL; options as :func:`convert_vg`."""
    check_options("relations-gqa", options, {"images", "predicates"})
    images = Path(options.get("images") or src.parent)
    return _conversion(samples_from_gqa(src, images, predicates=_predicates(options)), src)


def convert_fixture(
    src: Path, *, split: str | None = None, dataset: str | None = None, **options: Any
) -> Conversion:
    """Build the bundled composite fixture in folder ``src`` (images and ``relationships.json``)
    and convert it, with :data:`FIXTURE_PREDICATES` as the candidates. No options."""
    check_options("relations-fixture", options, set())
    vg = build_relations_fixture(src)
    return _conversion(samples_from_vg(vg, vg.parent, predicates=FIXTURE_PREDICATES), vg)

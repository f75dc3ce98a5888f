"""VG150 (Xu et al.'s Visual Genome split, as RECODE reads it) to PredCls task JSONL.

Source layout (the distributed files, as Scene-Graph-Benchmark / RECODE ship them)::

    SRC/VG-SGG-with-attri.h5          split, img_to_first/last_box, img_to_first/last_rel,
                                      labels, boxes_1024 (cx, cy, w, h at scale 1024),
                                      relationships (absolute box indices), predicates
    SRC/VG-SGG-dicts-with-attri.json  idx_to_label, idx_to_predicate (1-based; 0 = background)
    SRC/image_data.json               one entry per h5 image row (image_id, width, height)
    SRC/VG_100K/<image_id>.jpg        the images (``--set images=DIR`` elsewhere)

The rules follow ``maskrcnn_benchmark/data/datasets/visual_genome.py`` (HKUST-LongGroup/RECODE):
split flag 2 = test, 0 = train, ``val`` = the first 5,000 train images and ``train`` the rest
(``load_graphs``); images without boxes or relations are dropped (``filter_empty_rels``);
``image_data.json`` minus the four corrupted ids lines up with the h5 rows
(``load_image_filenames``); boxes go from (cx, cy, w, h) at 1024 to x1 y1 x2 y2 in image pixels
(``load_graphs`` then ``get_groundtruth``: ``/ 1024 * max(w, h)``); on the test split only the
24 "semantic" predicates are kept (``TEST_GROUP semantic``), and an image whose relations are all
outside them is kept with none (the metric skips it). Duplicate relations are kept (RECODE
de-duplicates train only).

Records: ``id`` (image_id), ``image``, ``width``, ``height``, ``objects`` (``label``, ``name``,
``box``), ``relations`` (``[subject index, object index, predicate id]``), ``predicates`` (id →
name of the evaluated predicates) and ``dataset``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmagents.errors import ConfigError, DatasetError
from mmagents.eval.convert import Conversion
from mmagents.eval.convert._common import check_options, find_file, read_json
from mmagents.graphs._recode_paper import VG150_SEMANTIC

__all__ = ["CORRUPTED", "convert", "relation_record"]

BOX_SCALE = 1024
#: Images RECODE skips when it lines image_data.json up with the h5 rows.
CORRUPTED = frozenset({1592, 1722, 4616, 4617})
NUM_VAL = 5000


def relation_record(
    *,
    image_id: Any,
    image: Path,
    size: tuple[int, int],
    labels: list[int],
    boxes: list[list[float]],
    relations: list[list[int]],
    idx_to_label: dict[int, str],
    predicates: dict[int, str],
    dataset: str,
    num_classes: int,
) -> dict[str, Any]:
    """One task record (shared by the VG150 and GQA200 converters)."""
    return {
        "id": str(image_id),
        "image": str(image.resolve()),
        "width": int(size[0]),
        "height": int(size[1]),
        "objects": [
            {
                "label": int(lab),
                "name": idx_to_label[int(lab)],
                "box": [round(float(v), 2) for v in b],
            }
            for lab, b in zip(labels, boxes, strict=True)
        ],
        "relations": [[int(s), int(o), int(p)] for s, o, p in relations],
        "predicates": {str(k): v for k, v in predicates.items()},
        "num_classes": int(num_classes),
        "dataset": dataset,
    }


def _images(src: Path, n_rows: int) -> list[dict[str, Any]]:
    path = find_file(src, ["image_data.json"], "image_data.json")
    entries = read_json(path)
    if not isinstance(entries, list):
        raise DatasetError(path, "expected a list of image entries")
    kept = [e for e in entries if int(e.get("image_id", -1)) not in CORRUPTED]
    if len(kept) != n_rows:
        raise DatasetError(
            path, f"{len(kept)} images (without the corrupted ids) but the h5 has {n_rows} rows"
        )
    return kept


def _split_rows(h5: Any, split: str) -> np.ndarray:
    flags = h5["split"][:]
    mask = flags == (2 if split == "test" else 0)
    mask &= h5["img_to_first_box"][:] >= 0
    mask &= h5["img_to_first_rel"][:] >= 0
    rows = np.where(mask)[0]
    if split == "val":
        return rows[:NUM_VAL]
    if split == "train":
        return rows[NUM_VAL:]
    return rows


def convert(
    src: Path, *, split: str | None = None, dataset: str | None = None, **options: Any
) -> Conversion:
    """Convert VG150 under ``src`` (default split ``test``).

    Options:
        images: The image folder (default ``SRC/VG_100K``).
        semantic: Keep only the 24 semantic predicates (default: on for ``test``, as RECODE).
        limit: Convert at most this many images (a quick subset, in file order).
    """
    import h5py

    check_options("vg150", options, {"images", "semantic", "limit"})
    split = split or "test"
    if split not in ("train", "val", "test"):
        raise ConfigError(f"vg150: split must be train, val or test, got {split!r}")
    semantic = options.get("semantic", split == "test")
    if isinstance(semantic, str):
        semantic = semantic.lower() in ("1", "true", "yes", "on")
    images_dir = Path(options.get("images") or src / "VG_100K")
    limit = int(options["limit"]) if options.get("limit") is not None else None
    dicts = read_json(find_file(src, ["VG-SGG-dicts-with-attri.json"], "VG150 dictionary"))
    try:
        idx_to_label = {int(k): v for k, v in dicts["idx_to_label"].items()}
        idx_to_pred = {int(k): v for k, v in dicts["idx_to_predicate"].items()}
    except (KeyError, AttributeError, ValueError):
        raise DatasetError(src, "the dictionary needs idx_to_label and idx_to_predicate") from None
    keep = set(VG150_SEMANTIC) if semantic else set(idx_to_pred)
    predicates = {k: v for k, v in sorted(idx_to_pred.items()) if k in keep}
    h5_path = find_file(src, ["VG-SGG-with-attri.h5"], "VG150 h5 file")
    records: list[dict[str, Any]] = []
    dropped_rels = empty = 0
    try:
        h5 = h5py.File(h5_path, "r")
    except OSError as err:
        raise DatasetError(h5_path, f"not a readable HDF5 file: {err}") from None
    with h5:
        try:
            infos = _images(src, len(h5["split"]))
            rows = _split_rows(h5, split)
            labels = h5["labels"][:, 0]
            boxes = h5[f"boxes_{BOX_SCALE}"][:].astype(np.float64)
            rels = h5["relationships"][:]
            preds = h5["predicates"][:, 0]
            first_box, last_box = h5["img_to_first_box"][:], h5["img_to_last_box"][:]
            first_rel, last_rel = h5["img_to_first_rel"][:], h5["img_to_last_rel"][:]
        except KeyError as err:
            raise DatasetError(h5_path, f"missing dataset {err}") from None
        xyxy = boxes.copy()
        xyxy[:, :2] = boxes[:, :2] - boxes[:, 2:] / 2
        xyxy[:, 2:] = xyxy[:, :2] + boxes[:, 2:]
        for row in rows[:limit]:
            b0, b1, r0, r1 = first_box[row], last_box[row], first_rel[row], last_rel[row]
            info = infos[row]
            w, h = int(info["width"]), int(info["height"])
            scale = max(w, h) / BOX_SCALE
            image_rels = []
            for r in range(r0, r1 + 1):
                s, o = int(rels[r][0] - b0), int(rels[r][1] - b0)
                if not (0 <= s <= b1 - b0 and 0 <= o <= b1 - b0):
                    raise DatasetError(h5_path, f"relation {r} points outside image row {row}")
                if int(preds[r]) in keep:
                    image_rels.append([s, o, int(preds[r])])
                else:
                    dropped_rels += 1
            empty += not image_rels
            records.append(
                relation_record(
                    image_id=info["image_id"],
                    image=images_dir / f"{info['image_id']}.jpg",
                    size=(w, h),
                    labels=[int(v) for v in labels[b0 : b1 + 1]],
                    boxes=(xyxy[b0 : b1 + 1] * scale).tolist(),
                    relations=image_rels,
                    idx_to_label=idx_to_label,
                    predicates=predicates,
                    dataset="vg150",
                    num_classes=len(idx_to_pred) + 1,
                )
            )
    notes = {
        "split": split,
        "semantic": bool(semantic),
        "predicates": len(predicates),
        "dropped_relations_outside_subset": dropped_rels,
        "images_without_relations": empty,
    }
    return Conversion(records=records, notes=notes)

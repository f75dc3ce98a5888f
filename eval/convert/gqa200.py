"""GQA200 (the GQA split RECODE evaluates on) to PredCls task JSONL.

Source layout::

    SRC/GQA_200_ID_Info.json   ind_to_classes, ind_to_predicates (lists; index 0 = background)
    SRC/GQA_200_Test.json      filenames_all, img_info_all, gt_boxes_all (x1 y1 x2 y2, pixels),
                               gt_classes_all, relationships_all ([subject, object, predicate])
    SRC/GQA_200_Train.json     the same for train
    SRC/images/<filename>      the images (``--set images=DIR`` elsewhere)

Rules from ``maskrcnn_benchmark/data/datasets/gqa.py`` (HKUST-LongGroup/RECODE, ``load_graphs``):
``val`` and ``test`` both read the test file, skip its 5,580th entry (1-based, as the reference
counts) and ``val`` keeps the first 5,000 images; images need at least one box and one
relation; on ``test`` only the 26 semantic predicates are kept (``TEST_GROUP semantic``), after
the emptiness check, so an image can be left with none (the metric skips it). Boxes are already
in pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmagents.errors import ConfigError, DatasetError
from mmagents.eval.convert import Conversion
from mmagents.eval.convert._common import check_options, find_file, read_json
from mmagents.eval.convert.vg150 import relation_record
from mmagents.graphs._recode_paper import GQA200_SEMANTIC

__all__ = ["SKIPPED_ENTRY", "convert"]

#: The reference drops this (1-based) entry of the test file for val and test.
SKIPPED_ENTRY = 5580
NUM_VAL = 5000


def convert(
    src: Path, *, split: str | None = None, dataset: str | None = None, **options: Any
) -> Conversion:
    """Convert GQA200 under ``src`` (default split ``test``).

    Options:
        images: The image folder (default ``SRC/images``).
        semantic: Keep only the 26 semantic predicates (default: on for ``test``).
        limit: Convert at most this many images.
    """
    check_options("gqa200", options, {"images", "semantic", "limit"})
    split = split or "test"
    if split not in ("train", "val", "test"):
        raise ConfigError(f"gqa200: split must be train, val or test, got {split!r}")
    semantic = options.get("semantic", split == "test")
    if isinstance(semantic, str):
        semantic = semantic.lower() in ("1", "true", "yes", "on")
    images_dir = Path(options.get("images") or src / "images")
    limit = int(options["limit"]) if options.get("limit") is not None else None
    info_path = find_file(src, ["GQA_200_ID_Info.json"], "GQA200 dictionary")
    info = read_json(info_path)
    try:
        classes, predicates_all = list(info["ind_to_classes"]), list(info["ind_to_predicates"])
    except (KeyError, TypeError):
        raise DatasetError(info_path, "needs ind_to_classes and ind_to_predicates") from None
    keep = set(GQA200_SEMANTIC) if semantic else set(range(1, len(predicates_all)))
    predicates = {i: predicates_all[i] for i in sorted(keep) if i < len(predicates_all)}
    name = "GQA_200_Train.json" if split == "train" else "GQA_200_Test.json"
    data_path = find_file(src, [name], f"GQA200 {name}")
    data = read_json(data_path)
    try:
        columns = [
            data[k]
            for k in (
                "filenames_all", "img_info_all", "gt_boxes_all", "gt_classes_all",
                "relationships_all",
            )
        ]  # fmt: skip
    except (KeyError, TypeError) as err:
        raise DatasetError(data_path, f"missing field {err}") from None
    records: list[dict[str, Any]] = []
    dropped = empty = 0
    for item, (filename, img, boxes, labels, rels) in enumerate(zip(*columns, strict=True), 1):
        if split != "train" and item == SKIPPED_ENTRY:
            continue
        if not (len(rels) > 0 and len(boxes) > 0):
            continue
        kept = [[int(s), int(o), int(p)] for s, o, p in rels if int(p) in keep]
        dropped += len(rels) - len(kept)
        empty += not kept
        records.append(
            relation_record(
                image_id=Path(str(filename)).stem,
                image=images_dir / str(filename),
                size=(int(img["width"]), int(img["height"])),
                labels=[int(v) for v in labels],
                boxes=[[float(v) for v in b] for b in boxes],
                relations=kept,
                idx_to_label=dict(enumerate(classes)),
                predicates=predicates,
                dataset="gqa200",
                num_classes=len(predicates_all),
            )
        )
        if split == "val" and len(records) == NUM_VAL:
            break
        if limit is not None and len(records) >= limit:
            break
    notes = {
        "split": split,
        "semantic": bool(semantic),
        "predicates": len(predicates),
        "dropped_relations_outside_subset": dropped,
        "images_without_relations": empty,
    }
    return Conversion(records=records, notes=notes)

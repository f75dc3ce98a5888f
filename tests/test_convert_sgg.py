"""VG150 and GQA200 converters on tiny files in the distributed formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmagents.errors import DatasetError
from mmagents.eval.convert import convert

h5py = pytest.importorskip("h5py")


def _vg150(root: Path, *, image_ids: list[int] | None = None) -> Path:
    """Three h5 rows: 0 train, 1 test (two boxes, three relations), 2 test without relations."""
    root.mkdir(parents=True, exist_ok=True)
    names = {str(i): f"p{i}" for i in range(1, 51)}
    names.update({"21": "holding", "38": "riding"})  # both in the 24-predicate subset
    dicts = {"idx_to_label": {"1": "man", "2": "horse", "3": "hat"}, "idx_to_predicate": names}
    (root / "VG-SGG-dicts-with-attri.json").write_text(json.dumps(dicts))
    ids = image_ids if image_ids is not None else [1, 1592, 2, 3]  # 1592 is a corrupted id
    images = [{"image_id": i, "width": 512, "height": 256} for i in ids]
    (root / "image_data.json").write_text(json.dumps(images))
    with h5py.File(root / "VG-SGG-with-attri.h5", "w") as h5:
        h5["split"] = np.array([0, 2, 2])
        h5["img_to_first_box"] = np.array([0, 1, 3])
        h5["img_to_last_box"] = np.array([0, 2, 3])
        h5["img_to_first_rel"] = np.array([0, 1, -1])
        h5["img_to_last_rel"] = np.array([0, 3, -1])
        h5["labels"] = np.array([[3], [1], [2], [3]])
        # cx, cy, w, h at scale 1024
        h5["boxes_1024"] = np.array(
            [[50, 50, 20, 20], [100, 100, 50, 50], [300, 300, 100, 100], [10, 10, 4, 4]]
        )
        h5["relationships"] = np.array([[0, 0], [1, 2], [2, 1], [1, 2]])
        h5["predicates"] = np.array([[1], [38], [1], [38]])
    return root


def test_vg150_test_split(tmp_path: Path) -> None:
    src = _vg150(tmp_path / "vg")
    out = tmp_path / "vg150.jsonl"
    result = convert("vg150", src, out, split="test")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    # row 1 only (row 2 has no relations: filter_empty_rels); image id 2 (1592 skipped).
    assert [r["id"] for r in records] == ["2"]
    record = records[0]
    # (100, 100, 50, 50) -> x1 y1 x2 y2 = 75 75 125 125 at 1024 -> * max(512, 256) / 1024.
    assert record["objects"][0] == {"label": 1, "name": "man", "box": [37.5, 37.5, 62.5, 62.5]}
    assert record["objects"][1]["box"] == [125.0, 125.0, 175.0, 175.0]
    # predicate 1 is outside the subset: dropped; the duplicate (0, 1, 38) is kept.
    assert record["relations"] == [[0, 1, 38], [0, 1, 38]]
    assert len(record["predicates"]) == 24 and record["predicates"]["21"] == "holding"
    assert record["image"].endswith("2.jpg") and Path(record["image"]).is_absolute()
    assert result.notes["dropped_relations_outside_subset"] == 1


def test_vg150_without_subset_and_train(tmp_path: Path) -> None:
    src = _vg150(tmp_path / "vg")
    result = convert("vg150", src, tmp_path / "a.jsonl", split="test", semantic="false")
    assert result.records[0]["relations"] == [[0, 1, 38], [1, 0, 1], [0, 1, 38]]
    # train: the first 5000 train images are val, so the one train image lands in val.
    assert convert("vg150", src, tmp_path / "t.jsonl", split="train").records == []
    assert [r["id"] for r in convert("vg150", src, tmp_path / "v.jsonl", split="val").records] == [
        "1"
    ]


def test_vg150_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="h5 has 3 rows"):
        convert("vg150", _vg150(tmp_path / "a", image_ids=[1, 2]), tmp_path / "x.jsonl")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="VG150 dictionary"):
        convert("vg150", empty, tmp_path / "x.jsonl")


def test_gqa200(tmp_path: Path) -> None:
    src = tmp_path / "gqa"
    src.mkdir()
    preds = ["__background__"] + [f"p{i}" for i in range(1, 101)]
    preds[8] = "holding"
    info = {"ind_to_classes": ["__background__", "man", "cup"], "ind_to_predicates": preds}
    (src / "GQA_200_ID_Info.json").write_text(json.dumps(info))
    test = {
        "filenames_all": ["a.jpg", "b.jpg", "c.jpg"],
        "img_info_all": [{"width": 10, "height": 10}] * 3,
        "gt_boxes_all": [
            [[0, 0, 4, 4], [5, 5, 9, 9]],
            [[0, 0, 4, 4]],
            [[0, 0, 4, 4], [1, 1, 5, 5]],
        ],
        "gt_classes_all": [[1, 2], [1], [2, 1]],
        "relationships_all": [[[0, 1, 8], [1, 0, 1]], [], [[0, 1, 2]]],
    }
    (src / "GQA_200_Test.json").write_text(json.dumps(test))
    result = convert("gqa200", src, tmp_path / "g.jsonl")
    # b.jpg has no relation: dropped; c.jpg keeps an empty list (its only predicate, 2, is
    # outside the 26-predicate subset).
    assert [r["id"] for r in result.records] == ["a", "c"]
    assert result.records[0]["relations"] == [[0, 1, 8]]
    assert result.records[1]["relations"] == []
    assert result.records[0]["objects"][1] == {
        "label": 2,
        "name": "cup",
        "box": [5.0, 5.0, 9.0, 9.0],
    }
    assert result.notes["images_without_relations"] == 1

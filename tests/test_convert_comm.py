"""The CoMM converter on a tiny file in the release's layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmagents.errors import DatasetError
from mmagents.eval.convert import convert

DOC = {
    "data_id": "d1",
    "summary_info": [{"type": "text", "content": "How to bake bread"}],
    "step_info": [
        [
            {"type": "text", "content": "(1)"},
            {"type": "text", "content": " Mix flour and water."},
            {"type": "image", "url": "http://x", "image_path": "d1/0.jpg"},
            {"type": "image", "url": "http://y", "image_path": "d1/1.jpg"},
        ],
        [{"type": "text", "content": "Bake it."}],
    ],
}


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".pth"])
def test_comm_release_formats(tmp_path: Path, suffix: str) -> None:
    src = tmp_path / f"test_data{suffix}"
    if suffix == ".json":
        src.write_text(json.dumps([DOC, {"data_id": "d2", "step_info": []}]))
    elif suffix == ".jsonl":
        src.write_text(json.dumps(DOC) + "\n" + json.dumps({"data_id": "d2", "step_info": []}))
    else:
        torch = pytest.importorskip("torch")
        torch.save([DOC, {"data_id": "d2", "step_info": []}], src)
    result = convert("comm", src, tmp_path / "out.jsonl", images=str(tmp_path / "imgs"))
    assert [r["id"] for r in result.records] == ["d1"]
    record = result.records[0]
    assert record["topic"] == "How to bake bread"
    # a step's text = its text contents joined in order (CoMM eval/utils.py get_steps_text)
    assert record["steps"][0]["text"] == "(1) Mix flour and water."
    assert record["steps"][0]["image"] == str((tmp_path / "imgs" / "d1/0.jpg").resolve())
    assert "image" not in record["steps"][1]
    assert result.notes == {
        "documents_without_steps": 1,
        "extra_images_per_step_dropped": 1,
        "n": 1,
    }


def test_comm_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(DatasetError, match="list of documents"):
        convert("comm", bad, tmp_path / "o.jsonl")
    bad.write_text(json.dumps([{"data_id": 1}]))
    with pytest.raises(DatasetError, match="no step_info"):
        convert("comm", bad, tmp_path / "o.jsonl")

"""``recode-predcls`` end to end: a tiny VG150-format fixture, the fake backends, both protocols."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from test_convert_sgg import _vg150

from mmagents.cli import main

CUES = {
    "subject_cues": ["the subject holds the object.", "x"],
    "object_cues": ["the object is held"],
    "spatial_cues": ["the subject is above the object"],
    "reasoning": "hands",
    "weights": {"subject": 1.0, "object": 1.0, "spatial": 1.0},
    "plausible": True,
}


def _fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    src = _vg150(tmp_path / "vg")
    (src / "VG_100K").mkdir()
    Image.new("RGB", (512, 256), (120, 80, 40)).save(src / "VG_100K" / "2.jpg")
    monkeypatch.setenv("MMAGENTS_HOME", str(tmp_path / "home"))
    for role in ("llm", "vlm", "scorer", "ocr", "embed"):
        monkeypatch.setenv(f"MMAGENTS_{role.upper()}__BACKEND", "fake")
    monkeypatch.setenv("MMAGENTS_LLM__REPLIES", json.dumps([json.dumps(CUES)]))
    monkeypatch.setenv("MMAGENTS_LLM__CYCLE", "true")
    data = tmp_path / "vg150.jsonl"
    assert main(["eval", "convert", "vg150", str(src), "--split", "test", "--out", str(data)]) == 0
    return data


@pytest.mark.parametrize("protocol", ["paper", "mmagents"])
def test_recode_predcls_runs_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    protocol: str,
) -> None:  # fmt: skip
    data = _fixture(tmp_path, monkeypatch)
    out = tmp_path / "run"
    args = ["eval", "run", "recode-predcls", "--data", str(data), "--out", str(out)]
    assert main([*args, "--set", f"protocol={protocol}", "--no-progress", "--no-cache"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    keys = ["R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100"]
    assert set(keys) <= set(metrics) and all(k in printed for k in keys)
    record = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    # two objects: two ordered pairs, one predicate each (graph constraint)
    assert record["pairs"] == 2 and len(record["prediction"]) == 2
    # ground truth: (man 0 -riding-> horse 1) twice; R@K is 0 or 1 with one pair that can hit
    # both duplicates at once.
    hit = any(p[:3] == [0, 1, 38] for p in record["prediction"])
    assert metrics["R@100"] == (100.0 if hit else 0.0)
    # mR over the 24 semantic classes: only 'riding' occurs, so mR = R / 24.
    assert metrics["mR@100"] == pytest.approx(metrics["R@100"] / 24, abs=0.01)

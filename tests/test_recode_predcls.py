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


@pytest.mark.parametrize("protocol", ["paper", "mmagents"])
def test_each_crop_and_layout_is_embedded_once(tmp_path: Path, protocol: str) -> None:
    from mmagents._config import load_config
    from mmagents.eval.recode_predcls import eval_predcls_sample
    from mmagents.models.fake import FakeEmbedder, FakeScorer, ScriptedChat
    from mmagents.runtime import Models

    class Counting(FakeScorer):
        images = 0

        def embed_images(self, images: list[object]) -> object:
            Counting.images += len(images)
            return super().embed_images(images)

    config = load_config(environ={"MMAGENTS_HOME": str(tmp_path / "home")})
    llm = ScriptedChat(replies=[json.dumps(CUES)], cycle=True)
    models = Models(config, llm=llm, scorer=Counting(), embed=FakeEmbedder())
    Image.new("RGB", (300, 200)).save(tmp_path / "i.png")
    boxes = [[0, 0, 99, 99], [200, 0, 299, 99], [0, 120, 99, 199]]
    objects = [{"label": i + 1, "name": n, "box": b} for i, (n, b) in enumerate(
        zip(["man", "horse", "hat"], boxes, strict=True))]  # fmt: skip
    sample = {"image": str(tmp_path / "i.png"), "objects": objects,
              "predicates": {"38": "riding", "21": "holding"}, "num_classes": 51}  # fmt: skip
    out = eval_predcls_sample(sample, models=models, settings={"protocol": protocol})
    assert out["pairs"] == 6
    from mmagents.graphs._recode_paper import layout_name

    if protocol == "paper":
        layouts = {layout_name(boxes[s], boxes[o]) for s in range(3) for o in range(3) if s != o}
        # 3 object crops + the distinct layouts, not 3 regions x 6 pairs.
        assert Counting.images == 3 + len(layouts) < 18
    else:
        # 3 object crops + 3 union crops ((s, o) and (o, s) share one), not 3 regions x 6 pairs.
        assert Counting.images == 3 + 3

"""CoMM's four benchmark tasks end to end on the tiny release-format fixture, and their metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mmagents._config import load_config
from mmagents.agents.comm_judge import CommJudgeScores, comm_judge_messages
from mmagents.cli import main
from mmagents.errors import ConfigError
from mmagents.eval.caption_metrics import cider_d
from mmagents.eval.convert.comm_fixture import COMM_FIXTURE, write_comm_fixture
from mmagents.eval.image_metrics import (
    MetricWeightsMissingError,
    fid,
    image_pairs,
    inception_score,
    load_rgb,
    lpips,
    ssim,
)
from mmagents.eval.interleaved import COMM_TASKS, eval_comm_sample
from mmagents.eval.metrics import METRICS
from mmagents.eval.runner import run_task
from mmagents.models.fake import FakeVLM, ScriptedChat
from mmagents.runtime import Models

CRITERION = {"justification": "scripted", "score": 7}
JUDGE = {
    c: CRITERION for c in ("completeness", "image_coherence", "image_quality", "text_fidelity")
}
STEP = {"title": "Fake step", "text": "A scripted step."}
TASKS = ["comm-image-to-text", "comm-text-to-image", "comm-continuation", "comm-question"]


def _reply(steps: int) -> str:
    """One reply both the judge and the step planner accept (each reads its own keys)."""
    return json.dumps({**JUDGE, "steps": [STEP] * steps})


@pytest.fixture
def fixture_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MMAGENTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no pretrained weights here
    for role in ("llm", "vlm", "scorer", "ocr", "imagegen", "embed"):
        monkeypatch.setenv(f"MMAGENTS_{role.upper()}__BACKEND", "fake")
    monkeypatch.setenv("MMAGENTS_LLM__CYCLE", "true")
    return write_comm_fixture(tmp_path / "comm")


def test_fixture_is_the_release_format_converted(fixture_data: Path) -> None:
    release = json.loads((fixture_data.parent / "comm_release.json").read_text())
    assert [d["data_id"] for d in release] == list(COMM_FIXTURE)
    assert {c["type"] for step in release[0]["step_info"] for c in step} == {"text", "image"}
    records = [json.loads(line) for line in fixture_data.read_text().splitlines()]
    assert records[0]["topic"] == COMM_FIXTURE["fixture-bread"][0]
    assert [s["text"] for s in records[0]["steps"]] == COMM_FIXTURE["fixture-bread"][1]
    assert all(Path(s["image"]).is_file() for r in records for s in r["steps"])


@pytest.mark.parametrize("task", TASKS)
def test_each_task_runs_end_to_end(
    task: str, fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    planned = {"comm-continuation": 1, "comm-question": 3}.get(task, 0)
    monkeypatch.setenv("MMAGENTS_LLM__REPLIES", json.dumps([_reply(planned)]))
    out = tmp_path / "run"
    args = ["eval", "run", task, "--data", str(fixture_data), "--out", str(out)]
    code = main([*args, "--no-progress", "--no-cache"])
    info = json.loads((out / "metrics.json").read_text())
    metrics, printed = info["metrics"], capsys.readouterr().out
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert info["errors"] == 0 and len(records) == 3
    criteria = COMM_TASKS[task.removeprefix("comm-")]
    for criterion in criteria:
        assert metrics[criterion] == 7.0 and criterion in printed
    assert {k.removeprefix("judge_") for k in records[0] if k.startswith("judge_")} == {
        *criteria,
        "justifications",
    }
    if task == "comm-text-to-image":
        # 3 generated images per document, each against the 3 ground-truth ones.
        assert all(len(r["generated_images"]) == 3 for r in records)
        assert 0 < metrics["SSIM"] < 1 and 0 < metrics["PSNR"] < 40
        # offline: the networks' weights are missing; the run says which file, the rest stands
        assert code == 1
        for key in ("LPIPS", "IS", "IS_reference", "FID"):
            assert metrics[key] is None
            error = info["metric_errors"][key]
            assert error.startswith("MetricWeightsMissingError") and ".pth" in error
        assert "squeezenet1_1-b8a52dc0.pth" in info["metric_errors"]["LPIPS"]
    else:
        assert code == 0
    if task == "comm-image-to-text":
        assert metrics["CIDEr"] is not None and metrics["mean_llm_calls"] == 1.0
        assert all(r["generated_images"] == [] for r in records)
    if task == "comm-continuation":  # k = 2 of 3 given: one step planned and illustrated
        assert metrics["mean_generated_steps"] == 1.0
        assert all(
            len(r["references"]) == 1 and r["prediction"] == ["A scripted step."] for r in records
        )
    if task == "comm-question":
        assert metrics["mean_generated_steps"] == 3.0 and metrics["mean_llm_calls"] == 2.0


class OracleVLM(FakeVLM):
    """Answers task 1's question with the ground-truth text of the step (by topic and index)."""

    def answer(self, image: Image.Image, question: str) -> str:
        for topic, texts in COMM_FIXTURE.values():
            if topic in question:
                index = int(question.split("step ")[1].split(" ")[0])
                return texts[index - 1]
        raise AssertionError(question)


def test_cider_of_perfect_step_texts(fixture_data: Path, tmp_path: Path) -> None:
    config = load_config()
    llm = ScriptedChat(replies=[_reply(0)], cycle=True)
    summary = run_task(
        "comm-image-to-text", config, out=tmp_path / "r", data=fixture_data, use_cache=False,
        progress=False, backends={"vlm": OracleVLM(), "llm": llm},
    )  # fmt: skip
    # Every n-gram of a perfect step has a positive idf unless all 9 steps share it, and none
    # does: each step's cosine is 1 for n = 1..4, so CIDEr-D = 10.
    assert summary.metrics["CIDEr"] == pytest.approx(10.0)
    assert summary.metrics["CIDEr_whole_text"] == pytest.approx(10.0)
    # The judge saw the three images, attached in order, and the written texts.
    human = llm.calls[0][-1].content
    assert [p["text"] for p in human if p["type"] == "text"][1:] == [
        "<img_0>",
        "<img_1>",
        "<img_2>",
    ]
    assert sum(p["type"] == "image_url" for p in human) == 3
    assert "(1) Mix flour" in human[0]["text"]


def test_cider_metric_levels_match_cider_d() -> None:
    records = [
        {
            "prediction": ["a cat sits", "a dog runs", "extra"],
            "references": ["a cat sits", "dogs run"],
        },
        {"prediction": ["bake bread"], "references": ["bake the bread", "unused"]},
    ]
    step = cider_d(
        {"0:0": "a cat sits", "0:1": "a dog runs", "1:0": "bake bread"},
        {"0:0": ["a cat sits"], "0:1": ["dogs run"], "1:0": ["bake the bread"]},
    )
    assert METRICS["cider"](records) == pytest.approx(step)
    whole = cider_d(
        {"0": "a cat sits a dog runs", "1": "bake bread"},
        {"0": ["a cat sits dogs run"], "1": ["bake the bread"]},
    )
    assert METRICS["cider"](records, level="document") == pytest.approx(whole)
    assert METRICS["cider"]([{"prediction": [], "references": ["x"]}]) is None
    with pytest.raises(ValueError):
        METRICS["cider"](records, level="word")


def _png(path: Path, colour: tuple[int, int, int], noise: int = 0) -> str:
    rng = np.random.default_rng(noise)
    pixels = np.full((40, 48, 3), colour, dtype=np.int16)
    if noise:
        pixels += rng.integers(-noise, noise + 1, pixels.shape, dtype=np.int16)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return str(path)


def test_image_pairs_and_per_document_means(tmp_path: Path) -> None:
    a, b, c = (_png(tmp_path / f"{n}.png", (90, 120, 200), i * 20) for i, n in enumerate("abc"))
    assert image_pairs([a, None, c], [b, c], "all") == [(b, a), (b, c), (c, a)]
    assert image_pairs([a, None, c], [b, c, None], "matched") == [(b, a)]
    with pytest.raises(ValueError):
        image_pairs([a], [b], "some")
    records = [
        {"generated_images": [a], "reference_images": [b]},
        {"generated_images": [a, c], "reference_images": [b]},
        {"generated_images": [], "reference_images": [b]},  # no pair: skipped
    ]
    first = ssim(load_rgb(b), load_rgb(a), data_range=255.0)
    second = (first + ssim(load_rgb(b), load_rgb(c), data_range=255.0)) / 2
    assert METRICS["ssim"](records) == pytest.approx((first + second) / 2)
    assert 0 < METRICS["psnr"](records) < 60
    assert load_rgb(a).shape == (256, 256, 3) and load_rgb(a, None).shape == (40, 48, 3)


def test_lpips_is_fid_on_tiny_random_networks(tmp_path: Path) -> None:
    images = [_png(tmp_path / f"{i}.png", (30 * i, 100, 200 - 30 * i), 10 + i) for i in range(4)]
    same = lpips([(images[0], images[0]), (images[1], images[1])], net="_comm_nets:tiny_lpips")
    other = lpips([(images[0], images[3])], net="_comm_nets:tiny_lpips")
    assert same == pytest.approx(0.0, abs=1e-6) and other > 0
    assert fid(images[:2], images[:2], feature="_comm_nets:TinyFeatures") == pytest.approx(
        0.0, abs=1e-3
    )
    assert fid(images[:2], images[2:], feature="_comm_nets:TinyFeatures") > 1e-3
    score = inception_score(images, feature="_comm_nets:TinyLogits", splits=2)
    assert 1.0 <= score <= 10.0  # IS lies between 1 and the number of classes


def test_text_to_image_task_with_tiny_networks(fixture_data: Path, tmp_path: Path) -> None:
    # A user task over comm-text-to-image whose generation metrics use networks of their own.
    task = tmp_path / "comm-t2i-tiny.yaml"
    task.write_text(
        "include: comm-text-to-image\ntask: comm-t2i-tiny\nmetrics:\n"
        "  - lpips: {net: '_comm_nets:tiny_lpips', key: LPIPS}\n"
        "  - inception_score: {feature: '_comm_nets:TinyLogits', splits: 2, key: IS}\n"
        "  - fid: {feature: '_comm_nets:TinyFeatures', key: FID}\n"
    )
    llm = ScriptedChat(replies=[_reply(0)], cycle=True)
    summary = run_task(
        task, load_config(), out=tmp_path / "r", data=fixture_data, use_cache=False,
        progress=False, backends={"llm": llm},
    )  # fmt: skip
    assert summary.exit_code == 0, summary.info.get("metric_errors")
    assert summary.metrics["LPIPS"] > 0 and summary.metrics["FID"] > 0
    assert 1.0 <= summary.metrics["IS"] <= 10.0


def test_missing_weights_are_named_before_any_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    images = [_png(tmp_path / f"{i}.png", (10 * i, 0, 0)) for i in range(2)]
    with pytest.raises(MetricWeightsMissingError, match="weights-inception-2015-12-05"):
        fid(images, images)
    with pytest.raises(MetricWeightsMissingError, match=str(tmp_path / "torch")):
        inception_score(images)
    with pytest.raises(MetricWeightsMissingError, match="alexnet-owt"):
        lpips([(images[0], images[1])], net_type="alex")


def test_judge_messages_and_scale() -> None:
    messages = comm_judge_messages({"given": "Topic: tea", "output": "(1) Boil. <img_0>"})
    text = messages[-1].content
    assert isinstance(text, str) and "OUTPUT:\n<document>\n(1) Boil. <img_0>\n</document>" in text
    url = "data:image/jpeg;base64,AAAA"
    parts = comm_judge_messages({"given": "g", "output": "o", "images": [url]})[-1].content
    assert parts[1] == {"type": "text", "text": "<img_0>"}
    assert parts[2] == {"type": "image_url", "image_url": {"url": url}}
    scores = CommJudgeScores.model_validate(JUDGE)
    assert scores.scores() == dict.fromkeys(JUDGE, 7)
    with pytest.raises(ValueError):
        CommJudgeScores.model_validate(
            {**JUDGE, "image_quality": {"justification": "x", "score": 11}}
        )


def test_caption_mode_and_bad_options(fixture_data: Path) -> None:
    sample: dict[str, Any] = json.loads(fixture_data.read_text().splitlines()[0])
    llm = ScriptedChat(replies=[_reply(3)], cycle=True)  # the question task plans 3 steps
    models = Models(load_config(), llm=llm)
    settings = {"task": "text-to-image", "judge_images": "caption"}
    record = eval_comm_sample(sample, models=models, settings=settings)
    sent = llm.calls[-1][-1].content
    assert isinstance(sent, str) and "<img_0> [image: fake caption" in sent
    assert record["llm_calls"] == 1 and len(record["reference_images"]) == 3
    no_judge = eval_comm_sample(
        sample, models=models, settings={"task": "question", "judge": "false"}
    )
    assert not any(k.startswith("judge_") for k in no_judge)
    for bad, match in [
        ({"task": "captioning"}, "task must be one of"),
        ({"task": "question", "kk": 1}, "unknown option"),
        ({"task": "question", "judge_images": "all"}, "judge_images"),
        ({"task": "question", "judge": "maybe"}, "not a boolean"),
    ]:
        with pytest.raises(ConfigError, match=match):
            eval_comm_sample(sample, models=models, settings=bad)
    with pytest.raises(ConfigError, match="steps"):
        eval_comm_sample({"steps": []}, models=models, settings={"task": "question"})

"""The comm-filter graph, the harness runner and both CLI commands, with fake models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import BaseMessage
from PIL import Image
from syrupy.assertion import SnapshotAssertion

from mmagents import Config, load_config
from mmagents.agents.coherence_judge import CoherenceScores, judge_messages
from mmagents.cli import main
from mmagents.errors import ConfigError
from mmagents.eval.interleaved import eval_interleaved_sample
from mmagents.graphs._comm_doc import DocStep, InterleavedDocument
from mmagents.graphs.comm_filter import (
    CommFilterInput,
    CommFilterSettings,
    build_comm_filter_graph,
)
from mmagents.images import ImageStore
from mmagents.models import register_backend
from mmagents.models.fake import FakeScorer, ScriptedChat
from mmagents.runtime import Models

JUDGE = {
    "reason": "Clear steps.",
    "relevance": 5,
    "progression": 4,
    "consistency": 4,
    "completeness": 3,
}


def judge_reply(**scores: int) -> str:
    return json.dumps({**JUDGE, **scores})


def scripted_reply(messages: list[BaseMessage]) -> str:
    """Plays both LLM roles: the judge when graded, else the planner (with the asked count)."""
    system, user = str(messages[0].content), str(messages[-1].content)
    if "You grade the text" in system:
        return judge_reply()
    n = int(re.search(r"(?:exactly|next) (\d+) steps", user).group(1))  # type: ignore[union-attr]
    return json.dumps({"steps": [{"title": f"Step {i}", "text": f"Do {i}."} for i in range(n)]})


def scripted_llm(**_: Any) -> ScriptedChat:
    return ScriptedChat(replies=[scripted_reply], cycle=True)


register_backend("llm", "scripted-comm", scripted_llm, replace=True)


class RedScorer(FakeScorer):
    """Alignment = red / 255; consistency = 1 when two images share their blue channel, else 0."""

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        feats = np.zeros((len(images), 5), dtype=np.float32)
        for row, image in enumerate(images):
            r, _, b = (int(v) for v in np.asarray(image)[0, 0])
            feats[row, 0] = r / 255
            feats[row, 1 + b % 4] = np.sqrt(1 - (r / 255) ** 2)
        return feats

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.tile(np.eye(5, dtype=np.float32)[0], (len(texts), 1))


def doc_with(store: ImageStore, colours: list[tuple[int, int, int] | None]) -> InterleavedDocument:
    steps = []
    for i, colour in enumerate(colours):
        handle = None if colour is None else store.put(Image.new("RGB", (8, 8), colour))
        steps.append(DocStep(title=f"T{i}", text=f"text {i}", image=handle, provenance="given"))
    return InterleavedDocument("Make tea", steps)


def score(
    config: Config, doc: InterleavedDocument, store: ImageStore, reply: str, **thr: Any
) -> Any:
    models = Models(config, store, llm=ScriptedChat(replies=[reply]), scorer=RedScorer())
    graph = build_comm_filter_graph(models=models)
    inputs = CommFilterInput(topic=doc.topic, steps=doc.steps).model_dump()
    return graph.invoke(inputs, context=CommFilterSettings(**thr))


def test_judge_rubric_and_normalisation() -> None:
    scores = CoherenceScores.model_validate(JUDGE)
    assert scores.coherence == pytest.approx((4 - 1) / 4)
    with pytest.raises(ValueError):
        CoherenceScores.model_validate({**JUDGE, "relevance": 6})
    messages = judge_messages({"topic": "Tea", "steps": [{"title": "Boil", "text": "x" * 2000}]})
    assert "Step 1: Boil." in str(messages[-1].content)
    assert len(str(messages[-1].content)) < 1000  # long steps are cut


def test_keeps_a_good_document(fake_config: Config) -> None:
    store = ImageStore(None)
    doc = doc_with(store, [(230, 0, 0), (204, 1, 0), (242, 2, 0)])
    result = score(fake_config, doc, store, judge_reply(), min_consistency=0.5)
    assert result["keep"] and result["decision"] == "keep" and not result["reasons"]
    assert result["text_coherence"] == pytest.approx(0.75)
    assert result["image_text_alignment"] == pytest.approx((0.9 + 0.8 + 0.95) / 3, abs=0.01)
    # Same blue everywhere: consistency is r_i * r_j + sqrt(1-r_i^2) sqrt(1-r_j^2).
    assert 0.9 < result["image_sequence_consistency"] <= 1.0
    assert result["scorer"]["steps"][0]["consistency"] is None
    assert result["judge"]["reason"] == "Clear steps." and result["llm_calls"] == 1


@pytest.mark.parametrize(
    ("colours", "reply", "reason"),
    [
        ([(230, 0, 0), (230, 0, 0)], judge_reply(relevance=1, progression=1), "text coherence"),
        ([(25, 0, 0), (25, 0, 0)], judge_reply(), "image-text alignment"),
        ([(128, 0, 0), (128, 0, 1)], judge_reply(), "image-sequence consistency"),
        ([None, None], judge_reply(), "no images"),
    ],
)
def test_drops_on_each_threshold(
    fake_config: Config, colours: list[Any], reply: str, reason: str
) -> None:
    store = ImageStore(None)
    result = score(fake_config, doc_with(store, colours), store, reply, min_alignment=0.3)
    assert result["decision"] == "drop" and not result["keep"]
    assert len(result["reasons"]) == 1 and result["reasons"][0].startswith(reason)


def test_image_free_document_can_be_allowed(fake_config: Config) -> None:
    store = ImageStore(None)
    result = score(fake_config, doc_with(store, [None]), store, judge_reply(), require_images=False)
    assert result["keep"] and result["image_text_alignment"] is None


def test_graph_shape(fake_config: Config, snapshot: SnapshotAssertion) -> None:
    assert build_comm_filter_graph(fake_config).get_graph().draw_mermaid() == snapshot


@pytest.fixture
def scripted_config(home: Path) -> Config:
    env = {"MMAGENTS_HOME": str(home), "MMAGENTS_LLM__BACKEND": "scripted-comm"}
    for role in ("scorer", "imagegen"):
        env[f"MMAGENTS_{role.upper()}__BACKEND"] = "fake"
    return load_config(environ=env)


def _sample(tmp_path: Path, n: int) -> dict[str, Any]:
    steps = []
    for i in range(n):
        path = tmp_path / f"s{i}.png"
        Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(path)
        steps.append({"title": f"Given {i}", "text": f"given text {i}", "image": str(path)})
    return {"id": "doc-1", "topic": "Make tea", "steps": steps}


def interleaved(config: Config, sample: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return eval_interleaved_sample(sample, models=Models(config), settings=settings)


def test_eval_runner_continues_then_scores(scripted_config: Config, tmp_path: Path) -> None:
    sample = _sample(tmp_path, 4)
    record = interleaved(scripted_config, sample, k=1, min_alignment=-1, min_consistency=-1)
    assert record["prediction"] == "keep"
    assert record["given_steps"] == 1 and record["generated_steps"] == 3
    assert [g["title"] for g in record["generated"]] == ["Step 0", "Step 1", "Step 2"]
    assert {g["provenance"] for g in record["generated"]} == {"fake"}
    assert record["coherence"] == pytest.approx(0.75)
    assert (record["judge_relevance"], record["judge_completeness"]) == (5, 3)
    assert isinstance(record["alignment"], float) and isinstance(record["consistency"], float)
    assert record["llm_calls"] == 2  # one plan, one judgement
    assert record["image_attempts"] == 3
    json.dumps(record)  # the harness writes records as JSON


def test_eval_runner_score_mode_and_bad_options(scripted_config: Config, tmp_path: Path) -> None:
    sample = _sample(tmp_path, 2)
    record = interleaved(scripted_config, sample, mode="score", min_coherence=0.9)
    assert record["prediction"] == "drop" and record["generated_steps"] == 0
    assert record["llm_calls"] == 1
    with pytest.raises(ConfigError, match="mode"):
        interleaved(scripted_config, sample, mode="other")
    with pytest.raises(ConfigError, match="steps"):
        interleaved(scripted_config, {"steps": []})
    with pytest.raises(ConfigError, match="valid int"):
        interleaved(scripted_config, sample, k="two")
    with pytest.raises(ConfigError, match="unknown option"):
        interleaved(scripted_config, sample, min_coherense=0.9)
    with pytest.raises(ConfigError, match="min_coherence"):
        interleaved(scripted_config, sample, min_coherence=2)


def test_interleaved_task_points_at_the_runner() -> None:
    import yaml

    task = Path(__file__).resolve().parents[1] / "eval" / "tasks" / "interleaved.yaml"
    if not task.is_file():
        pytest.skip("eval/tasks/interleaved.yaml is not there (harness not installed)")
    spec = yaml.safe_load(task.read_text())
    assert spec["runner"] == "mmagents.eval.interleaved:eval_interleaved_sample"


def test_cli_generate_then_filter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MMAGENTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MMAGENTS_LLM__BACKEND", "scripted-comm")
    monkeypatch.setenv("MMAGENTS_SCORER__BACKEND", "fake")
    monkeypatch.setenv("MMAGENTS_IMAGEGEN__BACKEND", "fake")
    out = tmp_path / "doc"
    args = ["run", "comm", "--topic", "How to brew pour-over coffee", "--total-steps", "3"]
    assert main([*args, "--out", str(out), "--set", "min_alignment=-1"]) == 0
    printed = capsys.readouterr().out
    assert "How to brew pour-over coffee: 3 steps" in printed and "html:" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "document.html",
        "document.json",
        "document.md",
        "images",
    ]
    assert len(list((out / "images").glob("*.png"))) == 3

    assert main(["run", "comm-filter", "--doc", str(out / "document.json"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {
        "text_coherence",
        "image_text_alignment",
        "image_sequence_consistency",
        "keep",
        "decision",
    }
    assert result["decision"] in ("keep", "drop") and result["text_coherence"] == pytest.approx(
        0.75
    )

    assert main(["run", "comm-filter", "--doc", str(out / "document.md")]) == 0
    assert "text coherence (LLM judge)" in capsys.readouterr().out

    # Continue the saved document to five steps.
    more = tmp_path / "more"
    assert (
        main(
            [
                "run",
                "comm",
                "--doc",
                str(out / "document.json"),
                "--total-steps",
                "5",
                "--out",
                str(more),
            ]
        )
        == 0
    )
    data = json.loads((more / "document.json").read_text())
    assert [s["origin"] for s in data["steps"]] == ["given"] * 3 + ["planned"] * 2
    assert data["steps"][0]["provenance"] == "fake"  # kept, not relabelled as given


def test_cli_errors_are_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MMAGENTS_HOME", str(tmp_path / "home"))
    assert main(["run", "comm", "--out", str(tmp_path / "x")]) == 1
    assert main(["run", "comm", "--topic", "t", "--out", str(tmp_path / "x"), "--json"]) == 1
    assert main(["run", "comm-filter", "--doc", str(tmp_path / "missing.json")]) == 1
    assert main(["run", "comm-filter"]) == 1


def test_cli_json_is_the_output(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MMAGENTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MMAGENTS_LLM__BACKEND", "scripted-comm")
    monkeypatch.setenv("MMAGENTS_SCORER__BACKEND", "fake")
    monkeypatch.setenv("MMAGENTS_IMAGEGEN__BACKEND", "fake")
    assert main(["run", "comm", "--topic", "Make tea", "--total-steps", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"topic", "steps", "meta", "llm_calls", "log"}
    assert len(out["steps"]) == 2 and all(s["image"].startswith("img_") for s in out["steps"])
    # The output is a comm-filter input as it is.
    steps = json.dumps({"topic": out["topic"], "steps": out["steps"]})
    path = tmp_path / "doc.json"
    path.write_text(steps)
    assert main(["run", "comm-filter", "--doc", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["decision"] in ("keep", "drop")


def test_harness_runs_the_interleaved_task(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (Path(__file__).resolve().parents[1] / "eval" / "tasks" / "interleaved.yaml").is_file():
        pytest.skip("eval/tasks/interleaved.yaml is not there (harness not installed)")
    monkeypatch.setenv("MMAGENTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MMAGENTS_LLM__BACKEND", "scripted-comm")
    monkeypatch.setenv("MMAGENTS_SCORER__BACKEND", "fake")
    monkeypatch.setenv("MMAGENTS_IMAGEGEN__BACKEND", "fake")
    data = tmp_path / "docs.jsonl"
    lines = []
    for doc_id in ("a", "b"):
        sample = _sample(tmp_path, 3)
        for step in sample["steps"]:
            step["image"] = Path(step["image"]).name  # relative to the data file
        lines.append(json.dumps({**sample, "id": doc_id}))
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    args = ["eval", "run", "interleaved", "--data", str(data), "--out", str(out), "--no-cache"]
    assert main([*args, "--set", "k=1", "--set", "min_alignment=-1"]) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["a", "b"] and all(r["error"] is None for r in records)
    assert all(r["generated_steps"] == 2 and r["prediction"] in ("keep", "drop") for r in records)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert any("coherence" in key for key in metrics) and any("alignment" in key for key in metrics)

"""The papers' tasks (vcr-qa, snli-ve, imagenet-describe, harmc/harmp/fhm) end to end on converted
synthetic fixtures with the fake backends (scripted llm, fake vlm/scorer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _paper_fixtures import write_imagenet, write_mrharm, write_snli_ve, write_vcr

from mmagents._config import Config, load_config
from mmagents.eval.convert import convert
from mmagents.eval.runner import run_task
from mmagents.eval.tasks import load_task


def _ask(*questions: str) -> str:
    return json.dumps({"sub_questions": list(questions)})


def _reason(answer: str) -> str:
    return json.dumps({"analysis": "from the sub-answers", "answer": answer, "confidence": 0.9})


@pytest.mark.parametrize(
    ("task", "writer", "name", "answers"),
    [
        ("vcr-qa", write_vcr, "vcr", ["person on the left is thirsty.", "In a bar"]),
        ("snli-ve", write_snli_ve, "snli-ve", ["entailment", "neutral"]),
    ],
)
def test_idealgpt_tasks_on_converted_fixtures(
    tmp_path: Path, task: str, writer: Any, name: str, answers: list[str]
) -> None:
    writer(tmp_path / "src")
    data = tmp_path / "data.jsonl"
    convert(name, tmp_path / "src", data)
    replies = [r for a in answers for r in (_ask("What is in the image?"), _reason(a))]
    env = {f"MMAGENTS_{role.upper()}__BACKEND": "fake" for role in ("llm", "vlm", "scorer", "ocr")}
    env["MMAGENTS_LLM__REPLIES"] = "[" + ", ".join(json.dumps(r) for r in replies) + "]"
    config = load_config(environ={"MMAGENTS_HOME": str(tmp_path / "home"), **env})
    summary = run_task(task, config, data=data, out=tmp_path / "run", progress=False,
                       options={"max_rounds": 1}, use_cache=False)  # fmt: skip
    assert summary.errors == 0 and summary.n == 2
    assert summary.metrics["accuracy"] == pytest.approx(0.5)  # first right, second wrong


def test_imagenet_describe_on_converted_fixture(tmp_path: Path, fake_config: Config) -> None:
    root, descriptors = write_imagenet(tmp_path / "imagenet")
    data = tmp_path / "in.jsonl"
    convert("imagenet", root, data, descriptors=str(descriptors))
    summary = run_task("imagenet-describe", fake_config, data=data, out=tmp_path / "run",
                       progress=False, options={"descriptors": str(descriptors)})  # fmt: skip
    assert summary.errors == 0 and summary.n == 3
    assert {"top_1", "top_5", "top_1_baseline", "top_5_baseline"} <= set(summary.metrics)
    assert summary.metrics["top_5"] == 1.0  # three classes: always in the top 5


@pytest.mark.parametrize("task", ["harmc", "harmp", "fhm"])
def test_meme_tasks_accept_the_converted_release(tmp_path: Path, task: str) -> None:
    data = write_mrharm(tmp_path)
    out = tmp_path / f"{task}.jsonl"
    convert("mrharm", data, out, dataset=task)
    from mmagents.eval.datasets import load_dataset

    samples = load_dataset(load_task(task), out)
    assert samples and all(s["label"] in ("harmful", "harmless") for s in samples)


def test_imagenet_describe_paper_protocol(tmp_path: Path, fake_config: Config) -> None:
    root, descriptors = write_imagenet(tmp_path / "imagenet")
    data = tmp_path / "in.jsonl"
    convert("imagenet", root, data, descriptors=str(descriptors))
    options = {"descriptors": str(descriptors), "protocol": "paper"}
    summary = run_task("imagenet-describe", fake_config, data=data, out=tmp_path / "run",
                       progress=False, options=options)  # fmt: skip
    assert summary.errors == 0 and summary.n == 3
    assert summary.info["run"]["options"]["protocol"] == "paper"


def test_paper_protocol_scores_the_reference_texts() -> None:
    import numpy as np

    from mmagents.graphs.describe import DescriptorClassifier

    seen: list[str] = []

    def features(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return np.ones((len(texts), 4), dtype=np.float32)

    table = {"tench": ["a freshwater fish"], "ant": []}
    DescriptorClassifier(None, ["tench", "ant"], table, text_features=features,
                         protocol="paper", suffix=".")  # fmt: skip
    assert seen == ["tench, which is a freshwater fish.", "ant, which has .", "tench.", "ant."]
    seen.clear()
    DescriptorClassifier(None, ["tench", "ant"], table, text_features=features)
    assert seen == ["tench, which is a freshwater fish", "ant", "tench", "ant"]


def test_paper_protocol_writes_descriptors_with_the_published_prompt(fake_config: Config) -> None:
    from PIL import Image

    from mmagents.graphs._run import run_graph
    from mmagents.graphs.describe import DescribeSettings, build_describe_graph
    from mmagents.images import default_store
    from mmagents.models.fake import FakeScorer, ScriptedChat
    from mmagents.runtime import Models

    llm = ScriptedChat(replies=[" four legs\n- a bushy tail\n\nQ: next"])
    models = Models(fake_config, llm=llm, scorer=FakeScorer())
    graph = build_describe_graph(fake_config, models=models)
    handle = default_store(fake_config).put(Image.new("RGB", (8, 8), (9, 9, 9)))
    out = run_graph(
        graph, {"image": handle, "classes": ["red_fox"]}, context=DescribeSettings(protocol="paper")
    )
    assert out["descriptors"] == {"red_fox": ["four legs", "a bushy tail"]}
    prompt = llm.calls[0][-1].content
    assert prompt.endswith("to tell there is a red fox in a photo:\n-\n") and "lemur" in prompt


def test_paper_profile_names_the_papers_models(tmp_path: Path) -> None:
    config = load_config(environ={"MMAGENTS_HOME": str(tmp_path), "MMAGENTS_PROFILE": "paper"})
    assert config.profile == "paper"
    llm, vlm, scorer = (config.role(r) for r in ("llm", "vlm", "scorer"))
    assert (llm.backend, llm.options["model"], llm.options["temperature"]) == (
        "openai",
        "gpt-3.5-turbo",
        0.0,
    )
    assert vlm.options["model"] == "Salesforce/blip2-flan-t5-xxl"
    assert vlm.options["caption_prompt"] == "a photo of"
    assert (scorer.backend, scorer.options["pretrained"]) == ("open_clip", "openai")


def test_cli_eval_run_imagenet_describe_paper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmagents.cli import main

    monkeypatch.setenv("MMAGENTS_HOME", str(tmp_path / "home"))
    for role in ("llm", "vlm", "scorer", "ocr"):
        monkeypatch.setenv(f"MMAGENTS_{role.upper()}__BACKEND", "fake")
    root, descriptors = write_imagenet(tmp_path / "imagenet")
    data = tmp_path / "in.jsonl"
    assert main(["eval", "convert", "imagenet", str(root), "--out", str(data),
                 "--set", f"descriptors={descriptors}"]) == 0  # fmt: skip
    args = ["eval", "run", "imagenet-describe", "--data", str(data), "--out", str(tmp_path / "r")]
    args += ["--descriptors", str(descriptors), "--set", "protocol=paper", "--no-progress"]
    assert main(args) == 0
    assert "top_1_baseline" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("task", "writer", "name", "verdicts"),
    [
        ("vcr-qa", write_vcr, "vcr", ["1", "2"]),  # gold: choice 1, then choice 4
        ("snli-ve", write_snli_ve, "snli-ve", ["entailment", "neutral"]),
    ],
)
def test_idealgpt_tasks_paper_protocol_on_the_command_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    task: str,
    writer: Any,
    name: str,
    verdicts: list[str],
) -> None:
    from mmagents.cli import main

    writer(tmp_path / "src")
    data = tmp_path / "data.jsonl"
    convert(name, tmp_path / "src", data)
    replies = []
    for verdict in verdicts:
        replies += [
            "Sub-question 1: What is in the image?",
            f"Analysis: seen.\nMore Likely Answer: {verdict}",
        ]
    monkeypatch.setenv("MMAGENTS_HOME", str(tmp_path / "home"))
    for role in ("llm", "vlm", "scorer", "ocr"):
        monkeypatch.setenv(f"MMAGENTS_{role.upper()}__BACKEND", "fake")
    monkeypatch.setenv(
        "MMAGENTS_LLM__REPLIES", "[" + ", ".join(json.dumps(r) for r in replies) + "]"
    )
    out = tmp_path / "run"
    args = ["eval", "run", task, "--data", str(data), "--out", str(out), "--no-cache"]
    assert main([*args, "--set", "protocol=paper", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["accuracy"] == pytest.approx(0.5)

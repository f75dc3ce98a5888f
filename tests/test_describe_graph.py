"""Classification by description: wording rule, scoring formula, caches, settings, graph shape.

All on fake backends (hash-seeded scorer, scripted chat); the offline end-to-end lives in
``test_describe_offline.py``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from syrupy.assertion import SnapshotAssertion

from mmagents import Config, ConfigError, default_store, sample_path
from mmagents._config import RoleConfig
from mmagents.graphs import get_pipeline
from mmagents.graphs._cues import TextFeatureCache, class_mean_scores
from mmagents.graphs._run import run_graph
from mmagents.graphs.describe import (
    DescribeSettings,
    DescriptorClassifier,
    build_describe_graph,
    descriptor_sentence,
    load_descriptor_file,
)
from mmagents.models.fake import FakeScorer, ScriptedChat
from mmagents.runtime import Models

TABLE = {
    "tabby cat": ["a striped coat", "whiskers", "has pointed ears"],
    "goldfish": ["orange scales", "a long flowing tail"],
    "rocket": ["used for space flight"],
}


class CountingScorer(FakeScorer):
    """FakeScorer that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.image_calls: list[int] = []
        self.text_calls: list[int] = []

    def embed_images(self, images: list[Any]) -> np.ndarray:
        self.image_calls.append(len(images))
        return super().embed_images(images)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        self.text_calls.append(len(texts))
        return super().embed_texts(texts)


@pytest.mark.parametrize(
    ("descriptor", "sentence"),
    [
        ("a long tail", "tabby cat, which is a long tail"),
        ("an orange beak", "tabby cat, which is an orange beak"),
        ("used for hunting", "tabby cat, which is used for hunting"),
        ("has stripes", "tabby cat, which has stripes"),
        ("often seen indoors", "tabby cat, which often seen indoors"),
        ("can climb trees", "tabby cat, which can climb trees"),
        ("whiskers", "tabby cat, which has whiskers"),
        # The reference rule tests the first letter, so any "a..." word takes "which is".
        ("antennae", "tabby cat, which is antennae"),
    ],
)
def test_descriptor_sentence_follows_the_reference_wording(descriptor: str, sentence: str) -> None:
    assert descriptor_sentence("tabby_cat", descriptor) == sentence


def test_class_mean_scores_by_hand() -> None:
    image = np.array([[1.0, 0.0], [0.0, 1.0]])
    texts = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    groups, per_text = class_mean_scores(image, texts, [2, 1], logit_scale=10.0)
    np.testing.assert_allclose(per_text, [[10, 0, 6], [0, 10, 8]])
    np.testing.assert_allclose(groups, [[5.0, 6.0], [5.0, 8.0]])
    with pytest.raises(ValueError, match="partition"):
        class_mean_scores(image, texts, [1, 1], logit_scale=1.0)


def test_top_k_ranking_matches_a_full_sort() -> None:
    from mmagents.graphs.describe import _top

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((5, 40)).round(1)  # rounding makes ties
    for k in (1, 5, 40):
        got = _top(scores, k)
        want = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(
            np.take_along_axis(scores, got, 1), np.take_along_axis(scores, want, 1)
        )


def _graph(config: Config, **backends: Any) -> Any:
    return build_describe_graph(config, models=Models(config, **backends))


def test_scores_match_hand_computed_values(fake_config: Config) -> None:
    scorer = FakeScorer()
    graph = _graph(fake_config, scorer=scorer)
    store = default_store(fake_config)
    handle = store.put(sample_path("cat", fake_config))
    inputs = {"image": handle, "classes": list(TABLE), "descriptor_table": TABLE}
    result = graph.invoke(inputs, context=DescribeSettings(top_classes=None))

    image = store.get(handle)
    expected = {
        name: float(scorer.score([image], [descriptor_sentence(name, d) for d in ds]).mean())
        for name, ds in TABLE.items()
    }
    got = {entry["class"]: entry["score"] for entry in result["scores"]}
    assert got == pytest.approx(expected, abs=1e-3)
    assert result["prediction"] == max(expected, key=expected.__getitem__)
    assert result["ranking"] == sorted(expected, key=lambda c: -expected[c])
    assert result["descriptor_source"] == "input" and result["llm_calls"] == 0

    plain = scorer.score([image], list(TABLE))[0]
    assert result["prediction_baseline"] == list(TABLE)[int(plain.argmax())]
    assert result["ranking_baseline"][0] == result["prediction_baseline"]

    # The explanation: the predicted class's descriptors, best first, with their own scores.
    best = result["prediction"]
    own = scorer.score([image], [descriptor_sentence(best, d) for d in TABLE[best]])[0]
    want = sorted(zip(TABLE[best], own, strict=True), key=lambda p: -p[1])[:3]
    assert [e["descriptor"] for e in result["explanation"]] == [d for d, _ in want]
    assert [e["score"] for e in result["explanation"]] == pytest.approx(
        [s for _, s in want], abs=1e-3
    )


def test_settings_change_per_run_without_rebuilding(fake_config: Config) -> None:
    graph = _graph(fake_config)
    handle = default_store(fake_config).put(sample_path("cat", fake_config))
    inputs = {"image": handle, "classes": list(TABLE), "descriptor_table": TABLE}
    assert len(graph.invoke(inputs)["scores"]) == 3  # default top_classes=5 > 3 classes
    one = graph.invoke(inputs, context=DescribeSettings(top_classes=1, top_descriptors=1))
    assert len(one["scores"]) == len(one["ranking_baseline"]) == len(one["explanation"]) == 1
    with pytest.raises(ConfigError, match="top_classes"):
        get_pipeline("describe").settings_for(fake_config, {"top_classes": "0"})
    with pytest.raises(ConfigError, match="unknown setting"):
        get_pipeline("describe").settings_for(fake_config, {"top": "1"})


def test_one_image_forward_per_batch_and_text_features_once(tmp_path: Path) -> None:
    scorer = CountingScorer()
    cache = TextFeatureCache(tmp_path / "features.sqlite")
    classifier = DescriptorClassifier(
        scorer, list(TABLE), TABLE, text_features=lambda t: cache.features(scorer, "fake", t)
    )
    images = [np.full((8, 8, 3), v, dtype=np.uint8) for v in (10, 120, 240)]
    from PIL import Image

    results = classifier.classify([Image.fromarray(a) for a in images])
    assert len(results) == 3 and scorer.image_calls == [3]
    assert scorer.text_calls == [6 + 3]  # six descriptor sentences and three class names

    # A new process (a fresh cache object on the same file) embeds no text again.
    fresh = TextFeatureCache(tmp_path / "features.sqlite")
    DescriptorClassifier(
        scorer, list(TABLE), TABLE, text_features=lambda t: fresh.features(scorer, "fake", t)
    )
    assert scorer.text_calls == [9]


def _writer_reply(messages: list[Any]) -> str:
    text = str(messages[-1].content)
    name = text.split("distinguishing a ")[1].split(" in a photo")[0]
    return json.dumps({"visual_features": [f"{name} shape", f"- {name} colour.", ""]})


def test_llm_descriptors_are_cached_per_class_model_and_prompt(fake_config: Config) -> None:
    llm = ScriptedChat(replies=[_writer_reply], cycle=True)
    handle = default_store(fake_config).put(sample_path("cat", fake_config))
    first = run_graph(_graph(fake_config, llm=llm), {"image": handle, "classes": ["cat", "dog"]})
    assert len(llm.calls) == 2 and first["llm_calls"] == 2
    assert first["descriptors"]["dog"] == ["dog shape", "dog colour"]  # tidied by the schema
    assert first["descriptor_source"] == "llm"

    # Same classes again, even through a new graph: answered from the on-disk cache.
    again = _graph(fake_config, llm=llm).invoke({"image": handle, "classes": ["dog", "cat"]})
    assert len(llm.calls) == 2 and again["llm_calls"] == 0

    # Another llm configuration is another model identity: a new call.
    llm_spec = fake_config.role("llm")
    hotter = RoleConfig(llm_spec.backend, {**llm_spec.options, "temperature": 0.9})
    other = replace(fake_config, roles={**fake_config.roles, "llm": hotter})
    _graph(other, llm=llm).invoke({"image": handle, "classes": ["cat"]})
    assert len(llm.calls) == 3


def test_descriptor_file_and_its_errors(tmp_path: Path, fake_config: Config) -> None:
    good = tmp_path / "d.json"
    good.write_text(json.dumps({"cat": ["whiskers", " "], "dog": []}))
    assert load_descriptor_file(good) == {"cat": ["whiskers"], "dog": []}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cat": "whiskers"}))
    with pytest.raises(ConfigError, match="lists of strings"):
        load_descriptor_file(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_descriptor_file(tmp_path / "missing.json")

    graph = _graph(fake_config)
    handle = default_store(fake_config).put(sample_path("coffee", fake_config))
    from_file = DescribeSettings(descriptors=str(good))
    out = graph.invoke({"image": handle, "classes": ["cat", "dog"]}, context=from_file)
    assert out["descriptor_source"] == f"file:{good}"
    assert out["llm_calls"] == 0
    with pytest.raises(ConfigError, match="no descriptors"):
        graph.invoke({"image": handle, "classes": ["cat", "zebra"]}, context=from_file)
    with pytest.raises(ConfigError, match="describe needs classes"):
        graph.invoke({"image": handle})


def test_label_space_of_the_descriptor_file(tmp_path: Path, fake_config: Config) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(TABLE))
    graph = _graph(fake_config)
    handle = default_store(fake_config).put(sample_path("cat", fake_config))
    # No classes given: the file's; label_space=descriptors: the file's even when given (the
    # paper ranks among the dataset's whole label space); else the input's.
    file_only = DescribeSettings(descriptors=str(path))
    assert set(graph.invoke({"image": handle}, context=file_only)["ranking"]) == set(TABLE)
    whole = DescribeSettings(descriptors=str(path), label_space="descriptors")
    out = graph.invoke({"image": handle, "classes": ["rocket"]}, context=whole)
    assert set(out["ranking"]) == set(TABLE)
    out = graph.invoke({"image": handle, "classes": ["rocket", "goldfish"]}, context=file_only)
    assert set(out["ranking"]) == {"rocket", "goldfish"}


def test_graph_shape(fake_config: Config, snapshot: SnapshotAssertion) -> None:
    assert _graph(fake_config).get_graph().draw_mermaid() == snapshot


def test_published_descriptor_file_loads(shared_data: Path) -> None:
    table = load_descriptor_file(shared_data / "descriptors" / "descriptors_imagenet.json")
    assert len(table) == 1000 and "tabby cat" in table and table["tabby cat"]


def test_cli_prints_one_json_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmagents.cli import main

    monkeypatch.setenv("MMAGENTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MMAGENTS_SCORER__BACKEND", "fake")
    path = tmp_path / "d.json"
    path.write_text(json.dumps(TABLE))
    image = sample_path("cat")
    argv = ["run", "describe", "--image", str(image), "--classes", *TABLE, "--descriptors",
            str(path), "--set", "top_classes=2", "--json"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prediction"] in TABLE and out["prediction_baseline"] in TABLE
    assert len(out["ranking"]) == 2 and out["explanation"] and out["llm_calls"] == 0
    # The same descriptors as a setting, and the human summary.
    argv = ["run", "describe", "--image", str(image), "--set", f"descriptors={path}"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "prediction:" in text and "because it shows:" in text


def test_classify_task_through_the_generic_harness(tmp_path: Path, fake_config: Config) -> None:
    from mmagents.eval.runner import run_task

    path = tmp_path / "d.json"
    path.write_text(json.dumps(TABLE))
    data = tmp_path / "data.jsonl"
    cat = sample_path("cat", fake_config)
    lines = [{"id": str(i), "image": str(cat), "label": "tabby cat"} for i in range(2)]
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = run_task("classify", fake_config, data=data, out=tmp_path / "run",
                       progress=False, options={"descriptors": str(path)})  # fmt: skip
    assert summary.errors == 0 and summary.n == 2
    assert {"top_1", "top_5", "top_1_baseline", "top_5_baseline"} <= set(summary.metrics)
    records = [json.loads(r) for r in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    # label_space=descriptors: every class of the file is ranked, not just the data's one label.
    assert all(set(r["ranking"]) == set(TABLE) for r in records)

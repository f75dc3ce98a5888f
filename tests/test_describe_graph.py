"""Classification by description: wording rule, scoring formula, caches, graph shape, CLI, runner.

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

from mmagents import Config, ConfigError, default_store, sample_path
from mmagents._config import RoleConfig
from mmagents.graphs._cues import TextFeatureCache, class_mean_scores
from mmagents.graphs.describe import (
    DescriptorClassifier,
    build_describe_graph,
    descriptor_sentence,
    eval_classify_sample,
    load_descriptor_file,
)
from mmagents.models.fake import FakeScorer, ScriptedChat

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


def test_scores_match_hand_computed_values(fake_config: Config) -> None:
    scorer = FakeScorer()
    graph = build_describe_graph(fake_config, scorer=scorer, descriptors=TABLE)
    store = default_store(fake_config)
    handle = store.put(sample_path("cat", fake_config))
    result = graph.invoke({"image": handle, "classes": list(TABLE)})["result"]

    image = store.get(handle)
    expected = {
        name: float(scorer.score([image], [descriptor_sentence(name, d) for d in ds]).mean())
        for name, ds in TABLE.items()
    }
    got = {entry["class"]: entry["score"] for entry in result["scores"]}
    assert got == pytest.approx(expected, abs=1e-3)
    assert result["prediction"] == max(expected, key=expected.__getitem__)
    assert [e["class"] for e in result["scores"]] == sorted(expected, key=lambda c: -expected[c])

    plain = scorer.score([image], list(TABLE))[0]
    assert result["baseline"]["prediction"] == list(TABLE)[int(plain.argmax())]

    # The explanation: the predicted class's descriptors, best first, with their own scores.
    best = result["prediction"]
    own = scorer.score([image], [descriptor_sentence(best, d) for d in TABLE[best]])[0]
    want = sorted(zip(TABLE[best], own, strict=True), key=lambda p: -p[1])[:3]
    assert [e["descriptor"] for e in result["explanation"]] == [d for d, _ in want]
    assert [e["score"] for e in result["explanation"]] == pytest.approx(
        [s for _, s in want], abs=1e-3
    )


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
    graph = build_describe_graph(fake_config, llm=llm)
    first = graph.invoke({"image": handle, "classes": ["cat", "dog"]})
    assert len(llm.calls) == 2 and first["llm_calls"] == 2
    assert first["descriptors"]["dog"] == ["dog shape", "dog colour"]  # tidied by the schema
    assert first["result"]["descriptor_source"] == "llm"

    # Same classes again, even through a new graph: answered from the on-disk cache.
    again = build_describe_graph(fake_config, llm=llm).invoke(
        {"image": handle, "classes": ["dog", "cat"]}
    )
    assert len(llm.calls) == 2 and again["llm_calls"] == 0

    # Another llm configuration is another model identity: a new call.
    llm_spec = fake_config.role("llm")
    hotter = RoleConfig(llm_spec.backend, {**llm_spec.options, "temperature": 0.9})
    other = replace(fake_config, roles={**fake_config.roles, "llm": hotter})
    build_describe_graph(other, llm=llm).invoke({"image": handle, "classes": ["cat"]})
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

    graph = build_describe_graph(fake_config, descriptors=good)
    handle = default_store(fake_config).put(sample_path("coffee", fake_config))
    out = graph.invoke({"image": handle, "classes": ["cat", "dog"]})
    assert out["result"]["descriptor_source"] == f"file:{good}"
    assert out["llm_calls"] == 0
    with pytest.raises(ConfigError, match="no descriptors"):
        graph.invoke({"image": handle, "classes": ["cat", "zebra"]})


def test_graph_shape(fake_config: Config) -> None:
    mermaid = build_describe_graph(fake_config, descriptors=TABLE).get_graph().draw_mermaid()
    edges = sorted(line.strip() for line in mermaid.splitlines() if "-->" in line)
    assert edges == ["__start__ --> descriptors;", "descriptors --> score;", "score --> __end__;"]


def test_eval_runner_records_both_rankings(tmp_path: Path, fake_config: Config) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(TABLE))
    sample = {"image": str(sample_path("cat", fake_config)), "classes": ["tabby cat", "goldfish"]}
    # With a descriptor file, the label space is the file's (the paper's whole-dataset ranking).
    record = eval_classify_sample(sample, fake_config, descriptors=str(path), top_k=5)
    assert record["prediction"] == record["ranking"][0] and set(record["ranking"]) == set(TABLE)
    assert record["prediction_baseline"] == record["ranking_baseline"][0]
    assert record["llm_calls"] == 0 and record["explanation"]
    # Explicit classes win (a comma-separated list); top_k cuts the rankings.
    record = eval_classify_sample(
        sample, fake_config, descriptors=str(path), classes="rocket,goldfish", top_k=1
    )
    assert record["ranking"] in (["rocket"], ["goldfish"])
    # Without either, the sample's (harness-attached) classes, descriptors written by the LLM.
    with pytest.raises(ConfigError, match="classify needs classes"):
        eval_classify_sample({"image": sample["image"]}, fake_config)


def test_cli_prints_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmagents.cli import main

    monkeypatch.setenv("MMAGENTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MMAGENTS_SCORER__BACKEND", "fake")
    path = tmp_path / "d.json"
    path.write_text(json.dumps(TABLE))
    image = sample_path("cat")
    argv = ["run", "describe", "--image", str(image), "--classes", *TABLE, "--descriptors",
            str(path), "--json"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prediction"] in TABLE and out["baseline"]["prediction"] in TABLE
    assert out["explanation"] and out["llm_calls"] == 0


def test_published_descriptor_file_loads(shared_data: Path) -> None:
    table = load_descriptor_file(shared_data / "descriptors" / "descriptors_imagenet.json")
    assert len(table) == 1000 and "tabby cat" in table and table["tabby cat"]

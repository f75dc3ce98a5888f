"""RECODE relation ranking: cue texts, vocabulary, spatial evidence, scoring formula, caches.

All on fake backends (hash-seeded scorer and embedder, scripted cue writer); the offline
end-to-end lives in ``test_recode_offline.py``, the open_clip path in ``test_recode_open_clip.py``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from syrupy.assertion import SnapshotAssertion

from mmagents import Config, ConfigError, default_store, sample_path
from mmagents.errors import DatasetError
from mmagents.eval.convert.relations import (
    _SCENES,
    FIXTURE_PREDICATES,
    build_relations_fixture,
    samples_from_gqa,
    samples_from_vg,
    write_jsonl,
)
from mmagents.graphs._cues import crop
from mmagents.graphs._relation_vocab import implausible_reason, super_category
from mmagents.graphs._settings import resolve_settings
from mmagents.graphs._spatial import (
    GeometricSpatialScorer,
    draw_spatial_image,
    spatial_phrases,
)
from mmagents.graphs.recode import (
    RecodeSettings,
    object_text,
    spatial_text,
    subject_text,
)
from mmagents.graphs.recode import build_recode_graph as _build
from mmagents.models.fake import FakeEmbedder, FakeScorer, ScriptedChat
from mmagents.runtime import Models

CAT = {"category": "cat", "box": [245, 212, 395, 312]}
CUP = {"category": "cup", "box": [220, 300, 420, 433]}
# "next to": out-of-range weights (as the 135M model writes them) are clamped and normalised;
# "under": all zero falls back to equal thirds.
WEIGHTS = {"on": (0.2, 0.2, 0.6), "next to": (2.5, 0.5, -1.0), "under": (0.0, 0.0, 0.0)}


def cue_reply(messages: list[Any]) -> str:
    """A deterministic cue writer: the cues name the predicate asked for."""
    text = str(messages[-1].content)
    predicate = text.split('"')[1].split(" ", 1)[1].rsplit(" ", 1)[0]
    ws, wo, wp = WEIGHTS.get(predicate, (0.5, 0.25, 0.25))
    return json.dumps(
        {
            "subject_cues": [f"subject {predicate} pose", "the subject looks at the object"],
            "object_cues": [f"object {predicate} shape"],
            "spatial_cues": [f"the subject is {predicate} the object", "subject is above object"],
            "reasoning": f"reasoning about {predicate}",
            "weights": {"subject": ws, "object": wo, "spatial": wp},
            "plausible": predicate != "above",
        }
    )


class CountingScorer(FakeScorer):
    def __init__(self) -> None:
        super().__init__()
        self.image_calls: list[int] = []

    def embed_images(self, images: list[Any]) -> np.ndarray:
        self.image_calls.append(len(images))
        return super().embed_images(images)


def _fixture_image(config: Config, scene: int = 0) -> str:
    folder = config.cache_dir / "relfix"
    if not (folder / f"scene{scene}.jpg").exists():
        build_relations_fixture(folder, config)
    return default_store(config).put(folder / f"scene{scene}.jpg")


def build_recode_graph(
    config: Config, *, llm: Any = None, scorer: Any = None, embedder: Any = None, **settings: Any
) -> Any:
    """The graph on injected backends, its default settings from ``settings``."""
    models = Models(config, llm=llm, scorer=scorer, embed=embedder)
    default = resolve_settings(RecodeSettings, config, settings)
    return _build(config, models=models, settings=default)


def _state(image: str, subject: dict, object_: dict, predicates: list[str]) -> dict[str, Any]:
    return {"image": image, "subject": subject, "object": object_, "predicates": predicates}


# -- texts and vocabulary ------------------------------------------------------------------------


def test_cue_texts_follow_the_paper_rewriting() -> None:
    assert subject_text("subject sitting on the object.", "cat") == "cat, cat sitting on something"
    assert object_text("the subject rests on object", "sofa") == "sofa, something rests on sofa"
    assert (
        spatial_text("The subject is above the object.", ("animal", "furniture"))
        == "The red box is above the green box"
    )
    assert spatial_text("animal overlaps furniture", ("animal", "furniture")) == (
        "Red box overlaps green box"
    )


def test_super_categories_and_fallback() -> None:
    assert super_category("Cat") == "animal"
    assert super_category("cats") == "animal"
    assert super_category("dining_table") == "furniture"
    assert super_category("zeppelin") == "zeppelin"


def test_paper_grouping_bounds_the_cue_keys(fake_config: Config) -> None:
    from mmagents.graphs._relation_vocab import cue_group

    assert [cue_group(g, "paper") for g in ("human", "animal", "tableware", "zeppelin")] == [
        "human",
        "animal",
        "product",
        "product",
    ]
    assert cue_group("tableware", "fine") == "tableware"
    llm = ScriptedChat(replies=[cue_reply], cycle=True)
    graph = build_recode_graph(fake_config, llm=llm, categories="paper")
    handle = _fixture_image(fake_config)
    graph.invoke(_state(handle, CAT, CUP, ["on"]))
    graph.invoke(_state(handle, CAT, {"category": "sofa", "box": [0, 0, 50, 50]}, ["on"]))
    assert len(llm.calls) == 1  # cup and sofa are both "product" in the paper's grouping
    assert '"animal on product"' in str(llm.calls[0][-1].content)


def test_rule_table_filters_only_known_categories() -> None:
    assert "subject of 'wearing'" in implausible_reason("wearing", "animal", "clothing")
    assert implausible_reason("wearing", "human", "clothing") is None
    assert "object of 'eating'" in implausible_reason("eating", "human", "furniture")
    assert implausible_reason("wearing", "robot", "clothing") is None  # unknown: never filtered
    assert implausible_reason("near", "animal", "tableware") is None


# -- spatial evidence ----------------------------------------------------------------------------


def test_layout_phrases_of_the_fixture_scenes() -> None:
    phrases = {p: spatial_phrases(cat, cup) for p, cup, cat in _SCENES}
    assert "the red box rests on top of the green box" in phrases["on"]
    assert "the red box is above the green box" in phrases["on"]
    assert {
        "the red box is to the left of the green box",
        "the red box is next to the green box",
    } <= set(phrases["next to"])
    assert "the red box is below the green box" in phrases["under"]
    assert "the red box is far from the green box" in phrases["above"]
    assert "the red box is inside the green box" in spatial_phrases([5, 5, 8, 8], [0, 0, 20, 20])
    assert "the red box is tall and narrow" in spatial_phrases([0, 0, 2, 20], [30, 0, 40, 10])


def test_drawn_spatial_image_puts_red_subject_over_green_object() -> None:
    image = np.asarray(draw_spatial_image([0, 0, 10, 10], [0, 20, 10, 30], size=100))
    assert image.shape == (100, 100, 3)
    top, bottom, gap = image[20, 50], image[80, 50], image[50, 50]
    assert top[0] > 200 and top[1] < 150  # red half over white
    assert bottom[1] > 150 and bottom[0] < 150  # green half over white
    assert (gap > 240).all()  # white between the boxes


def test_geometric_scorer_prefers_the_layout_its_cues_describe() -> None:
    embedder = FakeEmbedder(dim=64)
    geometric = GeometricSpatialScorer(embedder.embed)
    cues = ["the red box is below the green box"]
    scores = {p: geometric.score(cat, cup, cues)[0] for p, cup, cat in _SCENES}
    assert scores["under"] == pytest.approx(100.0, abs=1e-3)  # the exact phrase is present
    assert max(scores, key=scores.__getitem__) == "under"
    _, matches = geometric.score(_SCENES[2][2], _SCENES[2][1], cues)
    assert matches[0].phrase == cues[0] and matches[0].similarity == pytest.approx(1.0)


# -- scoring formula ------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial", ["image", "geometric"])
def test_scores_match_hand_computed_values(fake_config: Config, spatial: str) -> None:
    scorer, embedder = CountingScorer(), FakeEmbedder()
    llm = ScriptedChat(replies=[cue_reply], cycle=True)
    graph = build_recode_graph(
        fake_config, llm=llm, scorer=scorer, embedder=embedder, spatial=spatial, filter="none"
    )
    handle = _fixture_image(fake_config)
    out = graph.invoke(_state(handle, CAT, CUP, ["on", "next to", "under"]))
    result = out
    assert result["spatial_mode"] == spatial
    assert scorer.image_calls == [4 if spatial == "image" else 3]  # all regions in one pass

    image = default_store(fake_config).get(handle)
    sub_crop, obj_crop = crop(image, CAT["box"]), crop(image, CUP["box"])
    union = crop(image, [220, 212, 420, 433])
    for entry in result["ranking"]:
        p = entry["predicate"]
        cues = json.loads(cue_reply([type("M", (), {"content": f'"animal {p} tableware"'})()]))
        s = scorer.score([sub_crop], [subject_text(c, "cat") for c in cues["subject_cues"]]).mean()
        o = scorer.score([obj_crop], [object_text(c, "cup") for c in cues["object_cues"]]).mean()
        spatial_texts = [spatial_text(c, ("animal", "tableware")) for c in cues["spatial_cues"]]
        if spatial == "image":
            sp = scorer.score([draw_spatial_image(CAT["box"], CUP["box"])], spatial_texts).mean()
        else:
            sp = GeometricSpatialScorer(embedder.embed).score(
                CAT["box"], CUP["box"], spatial_texts
            )[0]
        t = scorer.score([union], [f"cat {p} cup"])[0, 0]
        w = np.clip(np.array(WEIGHTS[p]), 0, None)
        w = w / w.sum() if w.sum() > 0 else np.full(3, 1 / 3)
        expected = w[0] * s + w[1] * o + w[2] * sp * 0.6 + t
        assert entry["score"] == pytest.approx(expected, abs=2e-3), p
        evidence = entry["evidence"]
        assert evidence["triplet"]["text"] == f"cat {p} cup"
        assert [evidence[k]["weight"] for k in ("subject", "object", "spatial")] == pytest.approx(
            list(w), abs=1e-4
        )
        assert evidence["spatial"]["mode"] == spatial
    assert [e["score"] for e in result["ranking"]] == sorted(
        (e["score"] for e in result["ranking"]), reverse=True
    )


def test_options_change_the_combination(fake_config: Config) -> None:
    llm = ScriptedChat(replies=[cue_reply], cycle=True)
    state = _state(_fixture_image(fake_config), CAT, CUP, ["on"])
    base = build_recode_graph(fake_config, llm=llm, spatial="geometric").invoke(state)
    only_cues = build_recode_graph(
        fake_config, llm=llm, spatial="geometric", triplet_weight=0, weights="equal"
    ).invoke(state)
    ev = base["ranking"][0]["evidence"]
    equal = (ev["subject"]["score"] + ev["object"]["score"] + 0.6 * ev["spatial"]["score"]) / 3
    assert only_cues["ranking"][0]["score"] == pytest.approx(equal, abs=2e-3)
    with pytest.raises(ConfigError, match="spatial"):
        resolve_settings(RecodeSettings, fake_config, {"spatial": "sideways"})
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve_settings(RecodeSettings, fake_config, {"spatail": "image"})


def test_settings_change_per_run_without_rebuilding(fake_config: Config) -> None:
    llm = ScriptedChat(replies=[cue_reply], cycle=True)
    graph = build_recode_graph(fake_config, llm=llm)
    state = _state(_fixture_image(fake_config), CAT, CUP, ["on", "wearing"])
    assert graph.invoke(state)["spatial_mode"] == "image"
    out = graph.invoke(state, context=RecodeSettings(spatial="geometric", filter="none"))
    assert out["spatial_mode"] == "geometric" and out["filtered"] == []
    assert graph.invoke({**state, "predicates": None}, context=RecodeSettings(predicates=["on"]))[
        "ranked"
    ] == ["on"]


def test_auto_spatial_mode_follows_the_scorer(fake_config: Config) -> None:
    from dataclasses import replace

    from mmagents._config import RoleConfig

    llm = ScriptedChat(replies=[cue_reply], cycle=True)
    state = _state(_fixture_image(fake_config), CAT, CUP, ["on"])
    drawn = build_recode_graph(fake_config, llm=llm).invoke(state)
    assert drawn["spatial_mode"] == "image"  # the fake scorer reads pixels
    blind = replace(fake_config, roles={**fake_config.roles, "scorer": RoleConfig("label_space")})
    graph = build_recode_graph(blind, llm=llm, scorer=FakeScorer(), embedder=FakeEmbedder())
    assert graph.invoke(state)["spatial_mode"] == "geometric"


# -- caches and filters ---------------------------------------------------------------------------


def test_cues_are_cached_per_predicate_and_super_categories(fake_config: Config) -> None:
    llm = ScriptedChat(replies=[cue_reply], cycle=True)
    graph = build_recode_graph(fake_config, llm=llm)
    handle = _fixture_image(fake_config)
    first = graph.invoke(_state(handle, CAT, CUP, FIXTURE_PREDICATES))
    assert len(llm.calls) == 4 and first["llm_calls"] == 4

    # Other boxes, and other categories of the same super-categories: no LLM call.
    dog = {"category": "dog", "box": [10, 10, 200, 200]}
    mug = {"category": "mug", "box": [250, 250, 400, 400]}
    for subject, object_ in ((CAT, {**CUP, "box": [0, 0, 100, 100]}), (dog, mug)):
        out = build_recode_graph(fake_config, llm=llm).invoke(
            _state(handle, subject, object_, FIXTURE_PREDICATES)
        )
        assert out["llm_calls"] == 0
    assert len(llm.calls) == 4

    # A new super-category pair is a new key.
    man = {"category": "man", "box": [10, 10, 200, 200]}
    graph.invoke(_state(handle, man, CUP, ["on", "under"]))
    assert len(llm.calls) == 6


def test_concurrent_samples_share_one_call_per_key(fake_config: Config) -> None:
    llm = ScriptedChat(replies=[cue_reply], cycle=True)
    graph = build_recode_graph(fake_config, llm=llm)
    handle = _fixture_image(fake_config)
    threads = [
        threading.Thread(target=graph.invoke, args=(_state(handle, CAT, CUP, FIXTURE_PREDICATES),))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(llm.calls) == len(FIXTURE_PREDICATES)


def test_rule_filter_saves_llm_calls_and_llm_filter_uses_the_judgement(fake_config: Config) -> None:
    handle = _fixture_image(fake_config)
    llm = ScriptedChat(replies=[cue_reply], cycle=True)
    out = build_recode_graph(fake_config, llm=llm).invoke(
        _state(handle, CAT, CUP, ["on", "wearing", "above"])
    )
    assert len(llm.calls) == 2  # "wearing" was filtered by the rule table before any call
    assert [f["predicate"] for f in out["filtered"]] == ["wearing"]
    assert {e["predicate"] for e in out["ranking"]} == {"on", "above"}

    judged = build_recode_graph(fake_config, llm=llm, filter="both").invoke(
        _state(handle, CAT, CUP, ["on", "wearing", "above"])
    )
    reasons = {f["predicate"]: f["reason"] for f in judged["filtered"]}
    assert set(reasons) == {"wearing", "above"} and reasons["above"].startswith("llm")
    assert [e["predicate"] for e in judged["ranking"]] == ["on"]

    kept = build_recode_graph(fake_config, llm=llm, filter="none").invoke(
        _state(handle, CAT, CUP, ["wearing"])
    )
    assert [e["predicate"] for e in kept["ranking"]] == ["wearing"]


def test_bad_inputs_raise_typed_errors(fake_config: Config) -> None:
    graph = build_recode_graph(fake_config, llm=ScriptedChat(replies=[cue_reply], cycle=True))
    handle = _fixture_image(fake_config)
    with pytest.raises(ConfigError, match="empty"):
        graph.invoke(_state(handle, {**CAT, "box": [10, 10, 5, 20]}, CUP, ["on"]))
    with pytest.raises(ConfigError, match="predicate"):
        graph.invoke(_state(handle, CAT, CUP, [" "]))


def test_graph_shape(fake_config: Config, snapshot: SnapshotAssertion) -> None:
    assert build_recode_graph(fake_config).get_graph().draw_mermaid() == snapshot


# -- datasets, runner, CLI ------------------------------------------------------------------------


def test_vg_and_gqa_converters(tmp_path: Path) -> None:
    box = {"x": 1, "y": 2, "w": 10, "h": 20}
    vg = [
        {"image_id": 7, "relationships": [
            {"predicate": "ON", "subject": {"names": ["Cat"], **box}, "object": {"name": "mat", **box}},
            {"predicate": "sitting on", "subject": {"name": "cat", **box}, "object": {"name": "mat", **box}},
            {"predicate": "near", "subject": {"name": "dog", **box}, "object": {"name": "mat", **box}},
        ]}
    ]  # fmt: skip
    (tmp_path / "vg.json").write_text(json.dumps(vg))
    samples = samples_from_vg(tmp_path / "vg.json", tmp_path)
    assert len(samples) == 2 and samples[0]["label"] == ["on", "sitting on"]
    assert samples[0]["subject"] == {"category": "cat", "box": [1.0, 2.0, 11.0, 22.0]}
    assert samples[0]["predicates"] == ["near", "on", "sitting on"]
    assert samples[0]["image"] == str(tmp_path / "7.jpg")

    gqa = {"9": {"objects": {
        "1": {"name": "man", **box, "relations": [{"name": "riding", "object": "2"}]},
        "2": {"name": "horse", **box, "relations": []},
    }}}  # fmt: skip
    (tmp_path / "gqa.json").write_text(json.dumps(gqa))
    (g,) = samples_from_gqa(tmp_path / "gqa.json", tmp_path, predicates=["riding", "on"])
    assert (g["subject"]["category"], g["object"]["category"], g["label"]) == (
        "man",
        "horse",
        ["riding"],
    )
    assert g["predicates"] == ["riding", "on"]

    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 1, "relationships": [{"x": 1}]}]))
    with pytest.raises(DatasetError, match="image 1"):
        samples_from_vg(tmp_path / "bad.json", tmp_path)


def test_relations_converters_on_the_command_line(
    tmp_path: Path, fake_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmagents.cli import main
    from mmagents.eval.datasets import load_jsonl

    folder, out = tmp_path / "fixture", tmp_path / "rel.jsonl"
    assert main(["eval", "convert", "relations-fixture", str(folder), "--out", str(out)]) == 0
    assert "wrote 4 records" in capsys.readouterr().out
    samples = load_jsonl(out, required=["subject", "object", "label"], image_fields=["image"])
    assert sorted(s["label"][0] for s in samples) == sorted(FIXTURE_PREDICATES)
    vg, again = folder / "relationships.json", tmp_path / "vg.jsonl"
    argv = ["eval", "convert", "relations-vg", str(vg), "--out", str(again)]
    assert main([*argv, "--set", f"images={folder}", "--set", "predicates=on,Under"]) == 0
    first = json.loads(again.read_text().splitlines()[0])
    assert first["predicates"] == ["on", "under"] and first["image"] == str(folder / "scene0.jpg")
    assert main([*argv, "--set", "colour=red"]) != 0
    assert "unknown option(s) ['colour']" in capsys.readouterr().err


def test_fixture_through_the_harness_loader_and_runner(fake_config: Config) -> None:
    from mmagents.eval.datasets import load_jsonl
    from mmagents.eval.metrics import mean_recall_at_k, recall_at_k

    folder = fake_config.cache_dir / "relations"
    vg = build_relations_fixture(folder, fake_config)
    data = write_jsonl(
        samples_from_vg(vg, folder, predicates=FIXTURE_PREDICATES), folder / "r.jsonl"
    )
    samples = load_jsonl(data, required=["subject", "object", "label"], image_fields=["image"])
    assert len(samples) == 4 and {s["label"][0] for s in samples} == set(FIXTURE_PREDICATES)

    # The runner builds its graph from the config: seed the cue cache so no real LLM is needed.
    llm = ScriptedChat(replies=[cue_reply], cycle=True)
    build_recode_graph(fake_config, llm=llm).invoke(
        _state(_fixture_image(fake_config), CAT, CUP, FIXTURE_PREDICATES)
    )
    # The samples' entities (VG's x/y/w/h converted to boxes) are the graph's input as they are.
    graph = build_recode_graph(fake_config)
    records = []
    for sample in samples:
        fields = {k: sample[k] for k in ("image", "subject", "object", "predicates")}
        out = graph.invoke({**fields, "image": default_store(fake_config).put(sample["image"])})
        assert sorted(out["ranked"]) == sorted(FIXTURE_PREDICATES)
        assert out["llm_calls"] == 0 and out["prediction"] == out["ranked"][0]
        records.append({"prediction": out["ranked"], "target": sample["label"]})
    assert recall_at_k(records, k=4) == 1.0
    assert 0.0 <= (recall_at_k(records, k=1) or 0.0) <= 1.0
    assert mean_recall_at_k(records, k=4) == 1.0


def test_cli_prints_json(
    fake_config: Config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmagents.cli import main

    # Seed the on-disk cue cache under the same home: the CLI process then needs no LLM at all.
    llm = ScriptedChat(replies=[cue_reply], cycle=True)
    build_recode_graph(fake_config, llm=llm).invoke(
        _state(_fixture_image(fake_config), CAT, CUP, ["on", "next to"])
    )
    monkeypatch.setenv("MMAGENTS_HOME", str(fake_config.home))
    for role in ("scorer", "embed"):
        monkeypatch.setenv(f"MMAGENTS_{role.upper()}__BACKEND", "fake")
    image = fake_config.cache_dir / "relfix" / "scene0.jpg"
    argv = ["run", "recode", "--image", str(image), "--subject", json.dumps(CAT),
            "--object", json.dumps(["cup", *CUP["box"]]), "--predicates", "on", "next to",
            "wearing", "--json"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["llm_calls"] == 0 and out["prediction"] in ("on", "next to")
    assert out["filtered"][0]["predicate"] == "wearing"
    assert set(out["ranking"][0]["evidence"]) >= {"subject", "object", "spatial", "triplet"}

    # The human summary: one line per predicate, then the filtered ones.
    assert main(argv[:-1]) == 0
    text = capsys.readouterr().out
    assert "cat ? cup" in text and "filtered" in text


def test_relations_task_through_the_generic_harness(tmp_path: Path, fake_config: Config) -> None:
    from mmagents.eval.runner import run_task

    folder = fake_config.cache_dir / "relations"
    vg = build_relations_fixture(folder, fake_config)
    data = write_jsonl(
        samples_from_vg(vg, folder, predicates=FIXTURE_PREDICATES), folder / "r.jsonl"
    )
    llm = ScriptedChat(replies=[cue_reply], cycle=True)
    summary = run_task("relations", fake_config, data=data, out=tmp_path / "run",
                       progress=False, backends={"llm": llm})  # fmt: skip
    assert summary.errors == 0 and summary.n == 4
    # Four candidates, all ranked: each pair's gold predicate is within the top 5.
    assert summary.metrics["recall@5"] == 1.0 and summary.metrics["mean_recall@5"] == 1.0
    records = [json.loads(r) for r in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert all(sorted(r["prediction"]) == sorted(FIXTURE_PREDICATES) for r in records)
    assert all(r["top1"] == r["prediction"][0] for r in records)


def test_sample_paths_used_by_the_fixture_exist(fake_config: Config) -> None:
    assert (
        sample_path("cat", fake_config).is_file() and sample_path("coffee", fake_config).is_file()
    )


def test_paper_filter_tables_file_is_read_per_version_and_checked(
    fake_config: Config, tmp_path: Path
) -> None:
    import os

    tables = tmp_path / "tables.json"
    tables.write_text(json.dumps({"subject": {"cat_on": False}, "object": {}}))
    llm = ScriptedChat(replies=[cue_reply], cycle=True)
    graph = build_recode_graph(fake_config, llm=llm, protocol="paper", filter_tables=str(tables))
    handle = _fixture_image(fake_config)
    out = graph.invoke(_state(handle, CAT, CUP, ["on", "under"]))
    assert [f["predicate"] for f in out["filtered"]] == ["on"]
    # A new version of the file is read again (its mtime changed): "on" is allowed now.
    tables.write_text(json.dumps({"subject": {"cat_under": False}}))
    stat = tables.stat()
    os.utime(tables, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    out = graph.invoke(_state(handle, CAT, CUP, ["on", "under"]))
    assert [f["predicate"] for f in out["filtered"]] == ["under"]
    tables.write_text("[1, 2]")
    os.utime(tables, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    with pytest.raises(ConfigError, match="filter_tables"):
        graph.invoke(_state(handle, CAT, CUP, ["on"]))
    tables.unlink()
    with pytest.raises(ConfigError, match="filter_tables"):
        graph.invoke(_state(handle, CAT, CUP, ["on"]))

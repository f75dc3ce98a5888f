"""The comm generation graph with fake models: planning, the regeneration loop, its cap, saving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from syrupy.assertion import SnapshotAssertion

from mmagents import Config
from mmagents.errors import ConfigError, StructuredOutputError
from mmagents.graphs._comm_doc import InterleavedDocument, load_document
from mmagents.graphs._settings import resolve_settings
from mmagents.graphs.comm import CommInput, CommSettings, build_comm_graph
from mmagents.images import ImageStore
from mmagents.models.base import GeneratedImage, ImageGenerator, Scorer
from mmagents.models.fake import FakeImageGen, FakeScorer, ScriptedChat
from mmagents.runtime import Models


def plan_reply(*titles: str) -> str:
    steps = [{"title": t, "text": f"Do the {t.lower()} part carefully."} for t in titles]
    return json.dumps({"steps": steps})


class QualityImageGen(FakeImageGen):
    """Returns images whose red channel encodes a scripted quality, one value per call."""

    name = "quality-imagegen"

    def __init__(self, qualities: list[float]) -> None:
        super().__init__(size=16)
        self.qualities = list(qualities)
        self.prompts: list[str] = []

    def generate(self, prompt: str, n: int = 1) -> list[GeneratedImage]:
        self.prompts.append(prompt)
        quality = self.qualities.pop(0)
        # Distinct green channels keep every call's images distinct (separate handles).
        out = []
        for i in range(n):
            image = Image.new("RGB", (16, 16), (round(quality * 255), len(self.prompts), i))
            out.append(GeneratedImage(image, prompt, "generated", "quality-model", {}))
        return out


class RedScorer(FakeScorer):
    """Alignment = red channel / 255; every image is fully consistent with every other."""

    name = "red-scorer"

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        out = []
        for image in images:
            r = np.asarray(image)[0, 0, 0] / 255.0
            out.append([r, np.sqrt(max(0.0, 1 - r * r)), 0.0])
        return np.asarray(out, dtype=np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.tile(np.asarray([1.0, 0.0, 0.0], dtype=np.float32), (len(texts), 1))


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def run(
    config: Config,
    store: ImageStore,
    *,
    replies: list[str],
    imagegen: Any = None,
    scorer: Any = None,
    **settings: Any,
) -> tuple[InterleavedDocument, ScriptedChat]:
    llm = ScriptedChat(replies=replies)
    models = Models(
        config, store, llm=llm, imagegen=imagegen or FakeImageGen(), scorer=scorer or FakeScorer()
    )
    inputs = CommInput(
        topic=settings.pop("topic", "How to brew pour-over coffee"),
        total_steps=settings.pop("steps", 2),
        steps=settings.pop("partial", None) or [],
    )
    out = build_comm_graph(models=models).invoke(
        inputs.model_dump(), context=CommSettings(**settings)
    )
    return InterleavedDocument.from_output(out), llm


def test_fakes_satisfy_protocols() -> None:
    assert isinstance(QualityImageGen([1.0]), ImageGenerator)
    assert isinstance(RedScorer(), Scorer)


def test_plans_and_illustrates_every_step(fake_config: Config, store: ImageStore) -> None:
    doc, llm = run(
        fake_config,
        store,
        replies=[plan_reply("Heat water", "Grind beans", "Pour")],
        steps=3,
        min_alignment=-1.0,
        min_consistency=-1.0,
    )
    assert [s.title for s in doc.steps] == ["Heat water", "Grind beans", "Pour"]
    assert all(s.origin == "planned" and s.image in store for s in doc.steps)
    assert all(s.provenance == "fake" and s.attempts == 1 and s.passed for s in doc.steps)
    assert doc.steps[0].scores["consistency"] is None
    assert all(isinstance(s.scores["consistency"], float) for s in doc.steps[1:])
    assert doc.meta["llm_calls"] == 1 and len(llm.calls) == 1
    assert "How to brew pour-over coffee" in str(llm.calls[0][-1].content)


def test_low_score_is_regenerated_until_it_passes(fake_config: Config, store: ImageStore) -> None:
    gen = QualityImageGen([0.1, 0.2, 0.9, 0.8])
    doc, _ = run(
        fake_config,
        store,
        replies=[plan_reply("Heat water", "Pour")],
        imagegen=gen,
        scorer=RedScorer(),
        min_alignment=0.5,
        min_consistency=-1.0,
        max_retries=3,
        candidates=1,
    )
    first, second = doc.steps
    assert first.attempts == 3 and first.passed
    assert first.scores["alignment"] == pytest.approx(0.9, abs=0.01)
    assert second.attempts == 1 and second.passed
    # Each retry uses the next image-prompt template.
    assert gen.prompts[0].startswith("Heat water: Do the heat water part")
    assert gen.prompts[1] == "How to brew pour-over coffee. Heat water"
    assert gen.prompts[2] == "Heat water"
    assert first.prompt == gen.prompts[2]
    log = [(e["step"], e["attempt"], e["passed"]) for e in doc.meta["log"]]
    assert log == [(1, 1, False), (1, 2, False), (1, 3, True), (2, 1, True)]


def test_retries_are_capped_and_the_best_image_is_kept(
    fake_config: Config, store: ImageStore
) -> None:
    gen = QualityImageGen([0.3, 0.45, 0.2, 0.1, 0.1, 0.1])
    doc, _ = run(
        fake_config,
        store,
        replies=[plan_reply("Heat water", "Pour")],
        steps=2,
        imagegen=gen,
        scorer=RedScorer(),
        min_alignment=0.95,
        min_consistency=-1.0,
        max_retries=2,
        candidates=2,
    )
    assert [s.attempts for s in doc.steps] == [3, 3]
    assert len(gen.prompts) == 6 and not gen.qualities
    assert all(s.passed is False for s in doc.steps)
    # The best of all attempts is kept, not the last one.
    assert doc.steps[0].scores["alignment"] == pytest.approx(0.45, abs=0.01)


def test_zero_retries_means_one_attempt(fake_config: Config, store: ImageStore) -> None:
    doc, _ = run(
        fake_config,
        store,
        replies=[plan_reply("Heat water")],
        steps=1,
        imagegen=QualityImageGen([0.1]),
        scorer=RedScorer(),
        min_alignment=0.9,
        max_retries=0,
    )
    assert doc.steps[0].attempts == 1 and doc.steps[0].passed is False


def test_consistency_threshold_triggers_regeneration(
    fake_config: Config, store: ImageStore
) -> None:
    class ConsistencyScorer(RedScorer):
        """Alignment always 1; images share a direction only when their blue channel matches."""

        def embed_images(self, images: list[Image.Image]) -> np.ndarray:
            feats = np.zeros((len(images), 4), dtype=np.float32)
            feats[:, 0] = 1.0
            for row, image in enumerate(images):
                feats[row, 1 + min(int(np.asarray(image)[0, 0, 2]), 2)] = 1.0
            return feats / np.linalg.norm(feats, axis=1, keepdims=True)

        def embed_texts(self, texts: list[str]) -> np.ndarray:
            return np.tile(np.asarray([1.0, 0, 0, 0], dtype=np.float32), (len(texts), 1))

    class BlueImageGen(QualityImageGen):
        def __init__(self, blues: list[int]) -> None:
            super().__init__([1.0] * len(blues))
            self.blues = blues

        def generate(self, prompt: str, n: int = 1) -> list[GeneratedImage]:
            self.prompts.append(prompt)
            blue = self.blues.pop(0)
            image = Image.new("RGB", (8, 8), (255, len(self.prompts), blue))
            return [GeneratedImage(image, prompt, "generated", "blue-model", {})]

    gen = BlueImageGen([0, 1, 0])
    doc, _ = run(
        fake_config,
        store,
        replies=[plan_reply("One", "Two")],
        imagegen=gen,
        scorer=ConsistencyScorer(),
        min_alignment=0.0,
        min_consistency=0.9,
        candidates=1,
    )
    # Step 2's first image points another way than step 1's; the second matches it.
    assert [s.attempts for s in doc.steps] == [1, 2]
    assert doc.steps[1].scores["consistency"] == pytest.approx(1.0)


class SameImagesGen(FakeImageGen):
    """A retrieval-like backend: the same two images, best first, whatever the prompt."""

    def __init__(self, reds: tuple[int, ...] = (230, 150)) -> None:
        super().__init__()
        self.reds = reds

    def generate(self, prompt: str, n: int = 1) -> list[GeneratedImage]:
        images = [Image.new("RGB", (8, 8), (r, 0, 0)) for r in self.reds[:n]]
        return [
            GeneratedImage(im, prompt, "retrieved", f"/photos/{i}.png")
            for i, im in enumerate(images)
        ]


@pytest.mark.parametrize("allow_repeats", [False, True])
def test_an_earlier_image_is_not_reused(
    fake_config: Config, store: ImageStore, allow_repeats: bool
) -> None:
    doc, _ = run(
        fake_config,
        store,
        replies=[plan_reply("One", "Two")],
        imagegen=SameImagesGen(),
        scorer=RedScorer(),
        min_alignment=0.5,
        min_consistency=-1.0,
        allow_repeats=allow_repeats,
    )
    first, second = doc.steps
    assert first.source == "/photos/0.png" and first.passed
    assert second.source == ("/photos/0.png" if allow_repeats else "/photos/1.png")
    assert second.passed and second.attempts == 1


def test_only_repeats_means_retries_then_a_marked_repeat(
    fake_config: Config, store: ImageStore
) -> None:
    doc, _ = run(
        fake_config,
        store,
        replies=[plan_reply("One", "Two")],
        imagegen=SameImagesGen((230,)),
        scorer=RedScorer(),
        min_alignment=0.5,
        min_consistency=-1.0,
        candidates=1,
        max_retries=1,
    )
    assert doc.steps[1].image == doc.steps[0].image
    assert doc.steps[1].attempts == 2 and doc.steps[1].passed is False


def test_an_empty_image_backend_is_a_typed_error(fake_config: Config, store: ImageStore) -> None:
    from mmagents.errors import BackendError

    with pytest.raises(BackendError, match="no image"):
        run(fake_config, store, replies=[plan_reply("One")], steps=1, imagegen=SameImagesGen(()))


def test_partial_document_is_continued(fake_config: Config, store: ImageStore) -> None:
    given_image = store.put(Image.new("RGB", (8, 8), (10, 200, 30)))
    partial = [
        {"title": "Heat water", "text": "Boil water.", "image": given_image},
        {"title": "Grind beans", "text": "Grind 20 g medium-fine."},
    ]
    doc, llm = run(
        fake_config,
        store,
        replies=[plan_reply("Pour", "Serve")],
        steps=4,
        partial=partial,
        min_alignment=-1.0,
        min_consistency=-1.0,
    )
    assert [s.title for s in doc.steps] == ["Heat water", "Grind beans", "Pour", "Serve"]
    assert [s.origin for s in doc.steps] == ["given", "given", "planned", "planned"]
    assert doc.steps[0].image == given_image and doc.steps[0].provenance == "given"
    assert doc.steps[0].attempts == 0
    assert doc.steps[1].provenance == "fake"  # a given step without image gets one
    prompt = str(llm.calls[0][-1].content)
    assert "Step 1: Heat water" in prompt and "steps 3 to 4" in prompt


def test_given_images_are_kept_even_below_threshold(fake_config: Config, store: ImageStore) -> None:
    handle = store.put(Image.new("RGB", (8, 8), (1, 2, 3)))
    partial = [{"title": "A", "text": "a", "image": handle, "provenance": "retrieved"}]
    gen = QualityImageGen([0.1, 0.1])
    doc, _ = run(
        fake_config,
        store,
        replies=[plan_reply("B")],
        partial=partial,
        imagegen=gen,
        scorer=RedScorer(),
        min_alignment=2.0,
        max_retries=1,
    )
    assert doc.steps[0].image == handle and doc.steps[0].provenance == "retrieved"
    assert doc.steps[0].attempts == 0 and doc.steps[0].passed is False
    assert doc.steps[1].attempts == 2 and len(gen.prompts) == 2


def test_no_planning_when_the_document_is_long_enough(
    fake_config: Config, store: ImageStore
) -> None:
    partial = [{"title": "A", "text": "a"}, {"title": "B", "text": "b"}]
    doc, llm = run(fake_config, store, replies=[], steps=2, partial=partial, min_alignment=-1.0)
    assert len(doc.steps) == 2 and not llm.calls and doc.meta["llm_calls"] == 0


def test_planner_repairs_then_fails(fake_config: Config, store: ImageStore) -> None:
    # Wrong step count first, then right: the schema forces exactly n steps.
    doc, llm = run(
        fake_config,
        store,
        replies=[plan_reply("A"), plan_reply("A", "B")],
        steps=2,
        min_alignment=-1.0,
    )
    assert len(doc.steps) == 2 and doc.meta["llm_calls"] == 2
    assert "steps" in str(llm.calls[1][-1].content)  # the repair names the invalid field
    with pytest.raises(StructuredOutputError):
        run(fake_config, store, replies=["no json"] * 3, steps=2)


def test_bad_inputs_are_typed_errors(fake_config: Config, store: ImageStore) -> None:
    with pytest.raises(ConfigError, match="topic"):
        run(fake_config, store, replies=[], topic="", steps=3)
    with pytest.raises(ConfigError, match="steps"):
        run(fake_config, store, replies=[], steps=50)
    with pytest.raises(ConfigError, match="candidates"):
        resolve_settings(CommSettings, fake_config, {"candidates": 0})
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve_settings(CommSettings, fake_config, {"nonsense": 1})


def test_settings_arrive_per_run(fake_config: Config, store: ImageStore) -> None:
    """One compiled graph, two runs: each run's context sets its own retry budget."""
    llm = ScriptedChat(replies=[plan_reply("One"), plan_reply("One")])
    gen = QualityImageGen([0.1] * 4)
    models = Models(fake_config, store, llm=llm, imagegen=gen, scorer=RedScorer())
    graph = build_comm_graph(models=models, settings=CommSettings(max_retries=0))
    inputs = CommInput(topic="t", total_steps=1).model_dump()
    strict = CommSettings(min_alignment=0.9, max_retries=2, candidates=1)
    assert graph.invoke(inputs, context=strict)["steps"][0]["attempts"] == 3
    built = graph.invoke(inputs)  # no context: the build-time settings
    assert built["steps"][0]["attempts"] == 1


def test_settings_from_config_section(tmp_path: Path) -> None:
    from mmagents import load_config

    path = tmp_path / "c.toml"
    path.write_text('[graphs.comm]\nmax_retries = 5\nimage_prompts = "{title}"\n')
    config = load_config(path, environ={})
    settings = resolve_settings(CommSettings, config, {"min_alignment": "0.4", "candidates": None})
    assert settings.max_retries == 5 and settings.image_prompts == ("{title}",)
    assert settings.min_alignment == 0.4 and settings.candidates == 2
    with pytest.raises(ConfigError, match="max_retries"):
        resolve_settings(CommSettings, config, {"max_retries": "many"})


def test_graph_shape(fake_config: Config, snapshot: SnapshotAssertion) -> None:
    assert build_comm_graph(fake_config).get_graph().draw_mermaid() == snapshot


def test_saved_document_round_trips(fake_config: Config, store: ImageStore, tmp_path: Path) -> None:
    doc, _ = run(
        fake_config,
        store,
        replies=[plan_reply("Heat water", "Pour")],
        min_alignment=-1.0,
        min_consistency=-1.0,
    )
    saved = doc.save(tmp_path / "out", store)
    assert [p.name for p in saved.images] == ["step_01.png", "step_02.png"]
    for source in (saved.json, saved.markdown):
        back = load_document(source, ImageStore(None))
        assert [(s.title, s.text) for s in back.steps] == [(s.title, s.text) for s in doc.steps]
        assert [s.image for s in back.steps] == [s.image for s in doc.steps]  # same pixels
        assert [s.provenance for s in back.steps] == ["fake", "fake"]
        assert back.steps[1].scores == pytest.approx(doc.steps[1].scores)
        assert back.topic == doc.topic
    html = saved.html.read_text()
    assert html.count("data:image/png;base64,") == 2 and "images/" not in html
    assert "placeholder" in html


def test_markdown_from_elsewhere_loads(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "a.png")
    (tmp_path / "doc.md").write_text(
        "# Make tea\n\nIntro.\n\n## 1. Boil\n\n![kettle](a.png)\n\nBoil water.\n\nWait.\n\n"
        "## Steep\n\nSteep for 3 minutes.\n"
    )
    doc = load_document(tmp_path / "doc.md", ImageStore(None))
    assert doc.topic == "Make tea"
    assert [(s.title, s.text) for s in doc.steps] == [
        ("Boil", "Boil water.\n\nWait."),
        ("Steep", "Steep for 3 minutes."),
    ]
    assert doc.steps[0].image is not None and doc.steps[1].image is None
    with pytest.raises(ConfigError, match="steps"):
        (tmp_path / "empty.md").write_text("# nothing\n")
        load_document(tmp_path / "empty.md", ImageStore(None))


def test_retrieved_images_are_announced(tmp_path: Path) -> None:
    store = ImageStore(None)
    handle = store.put(Image.new("RGB", (4, 4), (9, 9, 9)))
    doc = InterleavedDocument(
        "t",
        [
            InterleavedDocument.from_dict(
                {
                    "steps": [
                        {
                            "title": "a",
                            "text": "b",
                            "image": handle,
                            "provenance": "retrieved",
                            "source": "/photos/coffee.png",
                        }
                    ]
                }
            ).steps[0]
        ],
    )
    saved = doc.save(tmp_path, store)
    for text in (saved.html.read_text(), saved.markdown.read_text()):
        assert "not generated" in text and "coffee.png" in text


def test_given_image_files_are_stored(
    fake_config: Config, store: ImageStore, tmp_path: Path
) -> None:
    Image.new("RGB", (8, 8), (10, 200, 30)).save(tmp_path / "given.png")
    partial = [{"title": "A", "text": "a", "image": str(tmp_path / "given.png")}]
    doc, _ = run(fake_config, store, replies=[], steps=1, partial=partial, min_alignment=-1.0)
    assert doc.steps[0].image in store and doc.steps[0].provenance == "given"

"""What every backend shares: the scorer base (score from features) and load-once weights."""

from __future__ import annotations

import importlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmagents.models.base import ScorerBase, feature_scores, load_once
from mmagents.models.fake import FakeScorer

MODELS = Path(__file__).resolve().parents[1] / "models"
_ROLE_MODULES = ("scorer_", "embed_", "vlm_", "ocr_", "imagegen_", "fake")
SCORERS = {
    "scorer_label_space": "LabelSpaceScorer",
    "scorer_open_clip": "OpenClipScorer",
    "scorer_hf_clip": "HFClipScorer",
    "fake": "FakeScorer",
}


@pytest.mark.parametrize(("module", "name"), SCORERS.items())
def test_every_scorer_takes_its_score_from_the_base(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(f"mmagents.models.{module}"), name)
    assert issubclass(cls, ScorerBase)
    assert cls.score is ScorerBase.score


def test_no_backend_writes_the_score_product_or_a_weight_cache_itself() -> None:
    backends = [p for p in MODELS.glob("*.py") if p.name.startswith(_ROLE_MODULES)]
    assert len(backends) >= 10
    for path in backends:
        source = path.read_text("utf-8")
        assert "@ self.embed_texts" not in source, path.name
        assert "ClassVar[dict" not in source, f"{path.name} keeps its own loaded-model cache"


def test_base_score_is_the_scaled_product_of_features() -> None:
    scorer = FakeScorer(dim=8)
    images = [Image.new("RGB", (4, 4), c) for c in ("red", "blue")]
    texts = ["a", "b", "c"]
    expected = 100.0 * scorer.embed_images(images) @ scorer.embed_texts(texts).T
    np.testing.assert_allclose(scorer.score(images, texts), expected, atol=1e-4)
    img, txt = scorer.embed_images(images), scorer.embed_texts(texts)
    np.testing.assert_allclose(feature_scores(2.0, img, txt), 2.0 * img @ txt.T, rtol=1e-6)


def test_load_once_loads_each_key_once_across_threads() -> None:
    calls: list[int] = []
    barrier = threading.Barrier(4)

    def loader() -> object:
        calls.append(1)
        return object()

    def ask(_: int) -> object:
        barrier.wait()
        return load_once(("test-load-once", "threads"), loader)

    with ThreadPoolExecutor(max_workers=4) as pool:
        values = list(pool.map(ask, range(4)))
    assert len(calls) == 1 and all(v is values[0] for v in values)


def test_load_once_retries_a_failed_load_and_allows_nested_loads() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("disk hiccup")
        # A loader that loads another key (label_space loads MiniLM) must not deadlock.
        return load_once(("test-load-once", "inner"), lambda: "inner") + "+outer"

    with pytest.raises(OSError):
        load_once(("test-load-once", "flaky"), flaky)
    assert load_once(("test-load-once", "flaky"), flaky) == "inner+outer"
    assert len(attempts) == 2

"""Tiny task runners for the eval-harness tests (importable as ``_eval_runners`` from tests/).

They follow the runner contracts ``fn(sample, config, **options) -> {"prediction": ...}`` (older)
and ``fn(sample, *, models, settings)`` (the run's runtime) without depending on any pipeline graph,
so the harness is tested on its own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from PIL import Image

from mmagents._config import Config
from mmagents.runtime import Models


def echo(
    sample: dict[str, Any], config: Config, *, sleep: float = 0.0, fail_on: list[str] | None = None
) -> dict[str, Any]:
    """Predict the sample's ``guess`` field; sleep first; raise for ids in ``fail_on``."""
    if sleep:
        time.sleep(sleep)
    if fail_on and sample["id"] in fail_on:
        raise ValueError(f"boom on {sample['id']}")
    return {"prediction": sample["guess"], "rounds": sample.get("rounds", 1)}


def bad_output(sample: dict[str, Any], config: Config) -> Any:
    """Breaks the contract: no prediction."""
    return {"answer": sample["guess"]}


def with_models(sample: dict[str, Any], config: Config) -> dict[str, Any]:
    """One llm call and two vision calls (caption + OCR) per sample, through load_role."""
    from mmagents.models import load_role

    image = Image.new("RGB", (16, 16), tuple(sample["colour"]))
    reply = load_role("llm", config).invoke(f"Classify: {sample['text']}").content
    caption = load_role("vlm", config).caption(image)
    lines = load_role("ocr", config).read(image)
    return {"prediction": str(reply).strip(), "caption": caption, "ocr": lines[0].text}


def with_runtime(
    sample: dict[str, Any], *, models: Models, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """As :func:`with_models`, through the run's runtime (the new-style runner contract)."""
    image = Image.new("RGB", (16, 16), tuple(sample["colour"]))
    reply = models.llm.invoke(f"Classify: {sample['text']}").content
    caption = models.vlm.caption(image)
    lines = models.ocr.read(image)
    return {"prediction": str(reply).strip(), "caption": caption, "ocr": lines[0].text}


def image_shape(sample: dict[str, Any], config: Config, *, sleep: float = 0.0) -> dict[str, Any]:
    """Predict ``wide`` / ``tall`` from the sample's image file (what ``loader: hf`` stored)."""
    if sleep:
        time.sleep(sleep)
    with Image.open(sample["image"]) as image:
        width, height = image.size
    return {"prediction": "wide" if width > height else "tall", "width": width}

"""Finding 4: images cost bounded memory (store LRU by bytes; image parts and turns capped)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from mmagents._config import ImageLimits
from mmagents.images import ImageStore
from mmagents.models.fake import ScriptedChat

from .conftest import KEY, MODEL, fake_roles_config


def _image(i: int, side: int = 100) -> Image.Image:
    return Image.new("RGB", (side, side), (i, 255 - i, 7))


def test_store_memory_is_bounded_by_bytes(tmp_path: Path) -> None:
    one = 100 * 100 * 3
    store = ImageStore(tmp_path, ImageLimits(memory_bytes=3 * one))
    handles = [store.put(_image(i)) for i in range(20)]
    # Before: up to 64 decoded images stayed in memory whatever their size.
    assert store._memory_bytes <= 3 * one and len(store._memory) == 3
    assert all(store.get(h).getpixel((0, 0)) == (i, 255 - i, 7) for i, h in enumerate(handles))
    assert store._memory_bytes <= 3 * one  # reading back from disk keeps the bound


def test_an_image_over_the_whole_budget_is_read_from_disk(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, ImageLimits(memory_bytes=1000))
    handle = store.put(_image(1))
    assert store._memory_bytes == 0 and store.get(handle).size == (100, 100)


def test_memory_only_store_keeps_its_newest_image() -> None:
    store = ImageStore(None, ImageLimits(memory_bytes=10))
    handle = store.put(_image(2))
    assert store.get(handle).size == (100, 100)


def test_handles_are_unchanged_by_hashing_in_bands(tmp_path: Path) -> None:
    import hashlib

    image = _image(3, side=1500)
    expected = hashlib.sha256()
    expected.update(b"RGB:1500x1500:")
    expected.update(image.tobytes())
    assert ImageStore(None).put(image) == "img_" + expected.hexdigest()[:16]


@pytest.mark.server
def test_image_parts_per_request_are_capped(home: Path, live_server: Any) -> None:
    buffer = io.BytesIO()
    _image(4, side=8).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    base = live_server(
        fake_roles_config(home),
        llm=ScriptedChat(replies=["ok"], cycle=True),
        max_images_per_request=2,
    )
    parts = [{"type": "image_url", "image_url": {"url": url}}] * 3
    body = {"model": MODEL, "messages": [{"role": "user", "content": parts}]}
    headers = {"Authorization": f"Bearer {KEY}"}
    answer = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "too_many_images"


def _photo(side: int) -> Image.Image:
    """A photo-like test image (the sample cat, upscaled) whose shorter side is ``side``."""
    from mmagents import load_config
    from mmagents.samples import sample_path

    cat = Image.open(sample_path("cat", load_config(environ={}))).convert("RGB")
    scale = side / min(cat.size)
    return cat.resize((round(cat.width * scale), round(cat.height * scale)), Image.BICUBIC)


def test_working_size_reads_keep_only_the_small_copy(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, ImageLimits())
    handle = store.put(_image(5, side=3000))
    fresh = ImageStore(tmp_path, ImageLimits())  # nothing in memory: read from disk
    small = fresh.get(handle, min_side=512)
    assert small.size == (600, 600)  # reduced by 5, the largest factor keeping >= 512
    assert fresh._memory_bytes == 600 * 600 * 3  # the full 27 MB image was not kept
    assert fresh.get(handle, min_side=512) is small  # cached as the working copy
    assert fresh.get(handle).size == (3000, 3000)  # the full image is still there
    assert fresh.get(handle, min_side=2000).size == (3000, 3000)  # no factor of 2 fits
    memory_only = ImageStore(None)
    kept = memory_only.put(_image(6, side=3000))
    assert memory_only.get(kept, min_side=512).size == (600, 600)
    assert memory_only.get(kept).size == (3000, 3000)  # its only copy was not evicted


def test_the_scorer_sees_the_same_crop_from_its_working_copy(tmp_path: Path) -> None:
    from mmagents.models.base import working_side
    from mmagents.models.scorer_label_space import LabelSpaceScorer, preprocess

    side = working_side(LabelSpaceScorer.__new__(LabelSpaceScorer))
    assert side == 512
    photo = _photo(2400)
    store = ImageStore(tmp_path)
    small = store.get(store.put(photo), min_side=side)
    assert min(small.size) >= side and small.size != photo.size
    diff = np.abs(preprocess(photo) - preprocess(small)) * 128  # in grey levels (0-255)
    assert diff.mean() < 1.0 and diff.max() <= 8, (diff.mean(), diff.max())


def test_role_tools_ask_the_store_for_the_backend_working_size(home: Path) -> None:
    from mmagents.images import default_store
    from mmagents.models import register_backend
    from mmagents.tools import build_tool

    seen: list[tuple[int, int]] = []

    class SmallVLM:
        name = "small-vlm"
        working_side = 256

        def __init__(self, **_: Any) -> None:
            pass

        def caption(self, image: Image.Image) -> str:
            seen.append(image.size)
            return "a picture"

        def answer(self, image: Image.Image, question: str) -> str:
            seen.append(image.size)
            return "yes"

    register_backend("vlm", "small-vlm", SmallVLM, replace=True)
    config = fake_roles_config(home, MMAGENTS_VLM__BACKEND="small-vlm")
    handle = default_store(config).put(_image(7, side=2000))
    build_tool("caption", config).invoke({"image": handle})
    build_tool("answer_question", config).invoke({"image": handle, "question": "ok?"})
    assert seen == [(286, 286), (286, 286)]  # reduced by 2000 // 256 = 7
    read = build_tool("read_text", fake_roles_config(home)).invoke({"image": handle})
    assert read["lines"][0]["box"][1] == [2000.0, 0.0]  # OCR reads the full image

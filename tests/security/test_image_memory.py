"""Finding 4: images cost bounded memory (store LRU by bytes; image parts and turns capped)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
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

"""Finding 1: no server-side file reads for a client; no path, size or endpoint URL echoed."""

from __future__ import annotations

import base64
import io
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from mmagents import Config
from mmagents.errors import ImageError, ImageSourceRefusedError, RemoteImageRefusedError
from mmagents.images import ImageStore
from mmagents.models.fake import ScriptedChat

from .conftest import KEY, MODEL, fake_roles_config


def _png(path: Path | None = None, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    if path is not None:
        path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def test_store_refuses_paths_from_clients_alike(tmp_path: Path) -> None:
    real = tmp_path / "secret.png"
    _png(real)
    store = ImageStore(None)
    messages = set()
    for source in (str(real), str(tmp_path / "missing.png"), "/etc/passwd", "relative.png"):
        with pytest.raises(ImageSourceRefusedError) as info:
            store.put_from_client(source)
        messages.add(str(info.value))
        assert "secret" not in str(info.value) and "bytes" not in str(info.value)
    assert len(messages) == 1  # no existence oracle
    assert store.put_from_client(_data_url(_png())).startswith("img_")


def test_mcp_paths_only_under_allowed_roots(tmp_path: Path) -> None:
    from mmagents._config import ImageLimits

    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    _png(inside / "a.png")
    _png(outside / "b.png", (1, 2, 3))
    (inside / "link.png").symlink_to(outside / "b.png")  # a link out of the root is outside
    store = ImageStore(None, ImageLimits(allowed_roots=(inside,)))
    assert store.put_from_client(str(inside / "a.png"), files=True).startswith("img_")
    refusals = set()
    for source in (outside / "b.png", outside / "nope.png", inside / "link.png", inside / ".."):
        with pytest.raises(ImageSourceRefusedError) as info:
            store.put_from_client(str(source), files=True)
        refusals.add(str(info.value))
    assert len(refusals) == 1 and "out" not in refusals.pop()
    with pytest.raises(ImageSourceRefusedError):  # no roots configured: no files at all
        ImageStore(None).put_from_client(str(inside / "a.png"), files=True)


def test_mcp_put_image_tool_uses_the_roots(home: Path, tmp_path: Path) -> None:
    from mmagents.serve.mcp_server import PutImageTool, _invoke

    photo = tmp_path / "p.png"
    _png(photo)
    closed = fake_roles_config(home)
    result, error = _invoke(PutImageTool(config=closed), {"source": str(photo)})
    assert error == "ImageSourceRefusedError" and str(tmp_path) not in json.dumps(result)
    opened = fake_roles_config(home, MMAGENTS_IMAGES__ALLOWED_ROOTS=str(tmp_path))
    result, error = _invoke(PutImageTool(config=opened), {"source": str(photo)})
    assert error is None and result["size"] == [8, 8]


def test_remote_fetch_failure_is_an_image_error_without_the_url(tmp_path: Path) -> None:
    from mmagents._config import ImageLimits

    port = _closed_port()
    store = ImageStore(None, ImageLimits(allow_remote=True))
    with pytest.raises(ImageError) as info:
        store.put_from_client(f"http://127.0.0.1:{port}/x.png")
    assert str(port) not in str(info.value)
    with pytest.raises(RemoteImageRefusedError):
        ImageStore(None).put_from_client(f"http://127.0.0.1:{port}/x.png")


def _ask(base: str, url: str) -> httpx.Response:
    body = {
        "model": MODEL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=60)


@pytest.mark.server
def test_http_api_never_reads_server_files(home: Path, tmp_path: Path, live_server: Any) -> None:
    config: Config = fake_roles_config(home)
    real = tmp_path / "cat.png"
    _png(real)
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$secret:19000:0:99999:7:::\n" * 20)
    base = live_server(config, llm=ScriptedChat(replies=["ok"], cycle=True))
    answers = [_ask(base, str(p)) for p in (real, shadow, tmp_path / "missing.png")]
    assert {a.status_code for a in answers} == {400}
    bodies = {json.dumps(a.json()["error"], sort_keys=True) for a in answers}
    assert len(bodies) == 1  # the same answer whether the file exists, is an image, or not
    text = bodies.pop()
    assert str(tmp_path) not in text and "bytes" not in text and "not found" not in text
    assert _ask(base, _data_url(_png())).status_code == 200


@pytest.mark.server
def test_dead_llm_endpoint_url_is_not_echoed(home: Path, live_server: Any) -> None:
    from mmagents.models._openai import make_chat

    port = _closed_port()
    dead = make_chat(
        base_url=f"http://127.0.0.1:{port}/v1",
        model="m",
        api_key="x",
        temperature=0,
        max_tokens=8,
        timeout=5,
        max_retries=0,
    )
    base = live_server(fake_roles_config(home), llm=dead)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {KEY}"}
    answer = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert answer.status_code == 502
    message = answer.json()["error"]["message"]
    assert "unreachable" in message and str(port) not in message and "127.0.0.1" not in message
    streamed = httpx.post(
        f"{base}/v1/chat/completions",
        json={**body, "stream": True},
        headers=headers,
        timeout=60,
    )
    assert "error" in streamed.text and str(port) not in streamed.text

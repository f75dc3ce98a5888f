"""MCP over stdio and streamable HTTP with the ``mcp`` client: base64 images in, image content out."""

from __future__ import annotations

import base64
import io
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest
from _servers import free_port, process_serving
from PIL import Image

from mmagents import load_config
from mmagents.errors import ConfigError

mcp = pytest.importorskip("mcp")
from mcp.client.stdio import StdioServerParameters  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

pytestmark = pytest.mark.server

KEY = "test-key-123"


def _env(home: Path) -> dict[str, str]:
    env = {"MMAGENTS_HOME": str(home), "PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1"}
    for role in ("vlm", "scorer", "ocr", "imagegen", "embed"):
        env[f"MMAGENTS_{role.upper()}__BACKEND"] = "fake"
    return env


def _command(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("mmagents")
    return (
        [str(script), *args] if script.exists() else [sys.executable, "-m", "mmagents.cli", *args]
    )


def _data_url(size: tuple[int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 60)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def _exercise(server: Any) -> dict[str, Any]:
    async with mcp.Client(server, read_timeout_seconds=120) as client:
        put = await client.call_tool("put_image", {"source": _data_url((40, 30))})
        handle = put.structured_content["image"]
        crop = await client.call_tool("crop_region", {"image": handle, "box": [0, 0, 20, 10]})
        caption = await client.call_tool("caption", {"image": handle})
    return {"put": put, "crop": crop, "caption": caption}


def _check(out: dict[str, Any]) -> None:
    assert not out["put"].is_error and out["put"].structured_content["size"] == [40, 30]
    assert [c.type for c in out["put"].content] == ["text"]  # the caller's own image: not echoed
    crop = out["crop"]
    assert not crop.is_error
    (text, image) = crop.content
    assert text.type == "text" and image.type == "image" and image.mime_type == "image/png"
    with Image.open(io.BytesIO(base64.b64decode(image.data))) as pixels:
        assert pixels.size == (20, 10) and pixels.getpixel((5, 5)) == (200, 30, 60)
    assert [c.type for c in out["caption"].content] == ["text"]  # no new image, no image content


def test_stdio_image_in_as_base64_and_out_as_image_content(home: Path) -> None:
    command, *args = _command("mcp")
    server = StdioServerParameters(command=command, args=args, env=_env(home))
    _check(anyio.run(_exercise, server))


@pytest.fixture
def http_server(home: Path) -> Any:
    port = free_port()
    env = {**_env(home), "MMAGENTS_API_KEY": KEY}
    with process_serving(_command("mcp", "--http", "--port", str(port)), port=port, env=env):
        yield f"http://127.0.0.1:{port}/mcp"


def test_http_transport_with_bearer_key(http_server: str) -> None:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {KEY}"})
    _check(anyio.run(_exercise, streamable_http_client(http_server, http_client=http)))

    for headers in ({}, {"Authorization": "Bearer wrong"}):
        request = urllib.request.Request(
            http_server,
            data=b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}',
            headers={"Content-Type": "application/json", **headers},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 401


def test_http_refuses_a_public_bind_without_a_key(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmagents.serve.mcp_http import build_http_app

    monkeypatch.delenv("MMAGENTS_API_KEY", raising=False)
    config = load_config(environ=_env(home))
    with pytest.raises(ConfigError, match="without a key"):
        build_http_app(config, host="0.0.0.0")
    assert build_http_app(config, host="0.0.0.0", api_key=KEY) is not None
    assert build_http_app(config, host="127.0.0.1") is not None

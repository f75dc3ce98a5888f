"""``mmagents mcp``: the role tools over MCP stdio, driven by the ``mcp`` client library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from mmagents import load_config
from mmagents.graphs.idealgpt import IdealGPTInput
from mmagents.samples import sample_path
from mmagents.tools import ROLE_TOOLS

mcp = pytest.importorskip("mcp")
from mcp.client.stdio import StdioServerParameters  # noqa: E402

pytestmark = pytest.mark.server


def _server(home: Path) -> StdioServerParameters:
    script = Path(sys.executable).with_name("mmagents")
    command, args = (
        (str(script), ["mcp"])
        if script.exists()
        else (sys.executable, ["-m", "mmagents.cli", "mcp"])
    )
    env = {"MMAGENTS_HOME": str(home), "PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1"}
    # put_image reads files only under the allowed roots: the samples live in the home.
    env["MMAGENTS_IMAGES__ALLOWED_ROOTS"] = str(home)
    for role in ("vlm", "scorer", "ocr", "imagegen", "embed"):
        env[f"MMAGENTS_{role.upper()}__BACKEND"] = "fake"
    return StdioServerParameters(command=command, args=args, env=env)


async def _session(home: Path, photo: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with mcp.Client(_server(home), read_timeout_seconds=120) as client:
        listed = await client.list_tools()
        out["tools"] = {tool.name: tool for tool in listed.tools}
        put = await client.call_tool("put_image", {"source": str(photo)})
        out["put"] = put
        handle = put.structured_content["image"]
        out["caption"] = await client.call_tool("caption", {"image": handle})
        out["unknown"] = await client.call_tool("caption", {"image": "img_0000000000000000"})
        out["invalid"] = await client.call_tool("read_text", {"image": "nope"})
    return out


def test_mcp_lists_and_calls_role_tools(home: Path) -> None:
    photo = sample_path("cat", load_config(environ={"MMAGENTS_HOME": str(home)}))
    out = anyio.run(_session, home, photo)

    # Pipeline tools that are graph tools come along (run_idealgpt, classify_image since 9f7f61d,
    # classify_meme since the meme port).
    pipelines = {"run_idealgpt", "classify_image", "classify_meme"}
    assert set(out["tools"]) == {*ROLE_TOOLS, *pipelines, "put_image"}
    schema = out["tools"]["answer_question"].input_schema
    assert set(schema["required"]) == {"image", "question"}
    # A pipeline tool's arguments are its input schema, the image as a handle.
    pipeline = out["tools"]["run_idealgpt"].input_schema
    assert set(pipeline["properties"]) == set(IdealGPTInput.model_fields)
    assert set(pipeline["required"]) == {"image", "question"}
    assert pipeline["properties"]["image"]["pattern"] == "^img_[0-9a-f]{16}$"

    assert not out["put"].is_error and out["put"].structured_content["size"] == [451, 300]
    caption = out["caption"]
    assert not caption.is_error
    assert caption.structured_content["caption"].startswith("fake caption")
    assert json.loads(caption.content[0].text) == caption.structured_content

    for name, error_type in (("unknown", "UnknownHandleError"), ("invalid", "ValidationError")):
        result = out[name]
        assert result.is_error
        assert result.structured_content["error"]["type"] == error_type

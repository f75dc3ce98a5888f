"""MCP servers from ``[mcp.servers]`` as tools of the chat agent, against mmagents' own MCP server
(``mmagents mcp``, fake backends) over stdio and streamable HTTP, with the ``mcp`` client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _servers import free_port, process_serving
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from PIL import Image

from mmagents import Config, load_config
from mmagents.errors import ConfigError, MCPServerError
from mmagents.graphs.chat_session import ChatAgent, ToolResultEvent
from mmagents.images import default_store
from mmagents.models.fake import ScriptedChat

pytest.importorskip("mcp")
from mmagents.tools.mcp_client import close_all, mcp_servers, mcp_tools

pytestmark = pytest.mark.server

KEY = "client-test-key"
FAKES = ("vlm", "scorer", "ocr", "imagegen", "embed")


def _mmagents() -> list[str]:
    script = Path(sys.executable).with_name("mmagents")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mmagents.cli"]


def _remote_env(home: Path) -> dict[str, str]:
    env = {"MMAGENTS_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.update({f"MMAGENTS_{r.upper()}__BACKEND": "fake" for r in FAKES})
    return env


def _config(tmp: Path, servers: str) -> Config:
    path = tmp / "mmagents.toml"
    path.write_text(servers)
    env = {"MMAGENTS_HOME": str(tmp / "home"), "MMAGENTS_CONFIG": str(path)}
    env.update({f"MMAGENTS_{r.upper()}__BACKEND": "fake" for r in FAKES})
    return load_config(environ=env)


def _toml_table(values: dict[str, str]) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + " }"


def _stdio_table(tmp: Path, name: str = "own", command: list[str] | None = None) -> str:
    command = command or [*_mmagents(), "mcp"]
    return (
        f"[mcp.servers.{name}]\ncommand = {json.dumps(command)}\n"
        f"env = {_toml_table(_remote_env(tmp / 'remote'))}\n"
    )


@pytest.fixture(autouse=True)
def _close_connections() -> Iterator[None]:
    yield
    close_all()


def _red(size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, (200, 30, 60))


def _crop_then_answer(handle: str, tool: str) -> ScriptedChat:
    call = {"name": tool, "args": {"image": handle, "box": [0, 0, 20, 10]}, "id": "call_crop"}
    return ScriptedChat(replies=[AIMessage(content="", tool_calls=[call]), "cropped"])  # type: ignore[list-item]


def _chat_crop(config: Config, tool: str) -> dict[str, Any]:
    """The chat agent crops a local image with the remote tool; the crop comes back local."""
    handle = default_store(config).put(_red())
    llm = _crop_then_answer(handle, tool)
    agent = ChatAgent(config, llm=llm, tools=["caption"], checkpointer=InMemorySaver())
    assert tool in {t.name for t in agent.tools}
    events = list(agent.turn("t", "crop the top left"))
    results = [e for e in events if isinstance(e, ToolResultEvent) and e.name == tool]
    assert len(results) == 1 and results[0].error_type is None, results
    return dict(json.loads(results[0].content))


def _check_crop(config: Config, out: dict[str, Any]) -> None:
    (image,) = out["images"]
    crop = default_store(config).get(image)  # the image content, stored locally
    assert crop.size == (20, 10) and crop.getpixel((5, 5)) == (200, 30, 60)
    assert out["result"]["size"] == [20, 10] and out["result"]["image"] == image


def test_stdio_server_tools_join_the_chat_agent_with_image_results(tmp_path: Path) -> None:
    config = _config(tmp_path, _stdio_table(tmp_path))
    tools = {t.name: t for t in mcp_tools(config)}
    assert {"own_put_image", "own_crop_region", "own_caption"} <= set(tools)
    assert "MCP server 'own'" in tools["own_caption"].description
    _check_crop(config, _chat_crop(config, "own_crop_region"))
    caption = tools["own_caption"].invoke({"image": default_store(config).put(_red((8, 8)))})
    assert caption["caption"].startswith("fake caption")  # a local handle, sent over put_image


def test_allow_list_and_prefix(tmp_path: Path) -> None:
    table = _stdio_table(tmp_path) + 'tools = ["caption", "embed"]\nprefix = "remote_"\n'
    config = _config(tmp_path, table)
    assert sorted(t.name for t in mcp_tools(config)) == ["remote_caption", "remote_embed"]
    missing = _config(tmp_path, _stdio_table(tmp_path) + 'tools = ["teleport"]\n')
    with pytest.raises(MCPServerError, match="lists no tool teleport"):
        mcp_tools(missing)


@pytest.fixture
def http_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, **_remote_env(tmp_path / "remote-http"), "MMAGENTS_API_KEY": KEY}
    command = [*_mmagents(), "mcp", "--http", "--port", str(port)]
    with process_serving(command, port=port, env=env):
        yield f"http://127.0.0.1:{port}/mcp"


def test_http_server_with_bearer_key(
    tmp_path: Path, http_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = f'[mcp.servers.web]\nurl = "{http_url}"\nbearer_env = "WEB_MCP_KEY"\n'
    config = _config(tmp_path, table)
    monkeypatch.delenv("WEB_MCP_KEY", raising=False)
    with pytest.raises(MCPServerError, match="WEB_MCP_KEY is not set"):
        mcp_tools(config)
    monkeypatch.setenv("WEB_MCP_KEY", "wrong")
    with pytest.raises(MCPServerError, match="'web'"):
        mcp_tools(config)
    monkeypatch.setenv("WEB_MCP_KEY", KEY)
    _check_crop(config, _chat_crop(config, "web_crop_region"))


def test_unstartable_and_unreachable_servers_are_typed_errors(tmp_path: Path) -> None:
    missing = _config(tmp_path, '[mcp.servers.nope]\ncommand = ["/nonexistent/mcp-server"]\n')
    with pytest.raises(MCPServerError, match=r"'nope'.*FileNotFoundError"):
        ChatAgent(missing, llm=ScriptedChat(replies=[]), checkpointer=InMemorySaver())
    closed = _config(tmp_path, f'[mcp.servers.gone]\nurl = "http://127.0.0.1:{free_port()}/mcp"\n')
    with pytest.raises(MCPServerError, match=r"'gone'.*could not start or connect"):
        mcp_tools(closed)
    silent = _config(
        tmp_path, '[mcp.servers.mute]\ncommand = ["sleep", "30"]\nconnect_timeout = 1\n'
    )
    started = time.monotonic()
    with pytest.raises(MCPServerError, match=r"'mute'.*connect_timeout"):
        mcp_tools(silent)
    assert time.monotonic() - started < 15


def test_a_server_that_dies_mid_session(tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    command = ["sh", "-c", f"echo $$ > {pid_file}; exec {' '.join(_mmagents())} mcp"]
    config = _config(tmp_path, _stdio_table(tmp_path, command=command) + "timeout = 20\n")
    tools = {t.name: t for t in mcp_tools(config)}
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    with pytest.raises(MCPServerError, match="'own'"):
        tools["own_embed"].invoke({"texts": ["a"]})
    with pytest.raises(MCPServerError, match="not running"):
        tools["own_embed"].invoke({"texts": ["a"]})
    # In a chat turn the failure reaches the planner as a typed tool error, not a crash.
    call = {"name": "own_embed", "args": {"texts": ["a"]}, "id": "call_embed"}
    llm = ScriptedChat(replies=[AIMessage(content="", tool_calls=[call]), "it failed"])  # type: ignore[list-item]
    agent = ChatAgent(config, llm=llm, tools=[], checkpointer=InMemorySaver())  # reconnects
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    events = list(agent.turn("t", "embed a"))
    (result,) = [e for e in events if isinstance(e, ToolResultEvent)]
    assert result.error_type == "MCPServerError" and "'own'" in result.content


def test_config_errors_name_the_server(tmp_path: Path) -> None:
    both = _config(tmp_path, '[mcp.servers.x]\ncommand = ["a"]\nurl = "http://h/mcp"\n')
    with pytest.raises(ConfigError, match="exactly one of command"):
        mcp_servers(both)
    typo = _config(tmp_path, '[mcp.servers.x]\ncomand = ["a"]\n')
    with pytest.raises(ConfigError, match=r"mcp\.servers\.x.*comand"):
        mcp_servers(typo)
    stray = _config(tmp_path, "[mcp]\nserver = {}\n")
    with pytest.raises(ConfigError, match=r"\[mcp\]"):
        mcp_servers(stray)


def test_unconfigured_the_tool_list_is_unchanged_and_mcp_not_imported(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from mmagents import load_config\n"
        "from mmagents.graphs.chat import chat_tools\n"
        "from mmagents.tools import TOOLS\n"
        "tools, omitted = chat_tools(load_config())\n"
        "assert sorted([t.name for t in tools] + list(omitted)) == sorted(TOOLS.names())\n"
        "assert 'mcp' not in sys.modules, 'mcp imported without [mcp.servers]'\n"
    )
    env = {**os.environ, **_remote_env(tmp_path)}
    env.pop("MMAGENTS_CONFIG", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

"""``langgraph.json`` is served by the real LangGraph dev server (``langgraph-cli[inmem]``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from mmagents import load_config
from mmagents._registry import import_string
from mmagents.graphs import PIPELINES
from mmagents.images import default_store

ROOT = Path(__file__).resolve().parents[1]
SPEC = json.loads((ROOT / "langgraph.json").read_text())


def test_langgraph_json_lists_every_pipeline_on_the_contract() -> None:
    on_contract = {name for name, p in PIPELINES.items() if p.on_contract()}
    assert set(SPEC["graphs"]) == on_contract
    for name, target in SPEC["graphs"].items():
        module = target.partition(":")[0]
        factory = import_string(target)  # a factory LangGraph calls with a RunnableConfig
        assert module == "mmagents.graphs._langgraph" and callable(factory), name
        assert factory({}).get_graph().nodes, name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    pytest.importorskip("langgraph_api", reason="langgraph-cli[inmem] is not installed")
    home = tmp_path / "home"
    toml = tmp_path / "fake.toml"
    reply = json.dumps(
        {"sub_questions": ["What is it?"], "analysis": "a", "answer": "cat", "confidence": 0.2}
    )
    toml.write_text(
        f"[roles.llm]\nbackend = 'fake'\ncycle = true\nreplies = [{json.dumps(reply)}]\n"
        "[roles.vlm]\nbackend = 'fake'\n"
    )
    env = {
        **os.environ,
        "MMAGENTS_HOME": str(home),
        "MMAGENTS_CONFIG": str(toml),
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
    }
    port = _free_port()
    command = [
        sys.executable, "-c", "from langgraph_cli.cli import cli; cli()", "dev",
        "--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload",
        # Our nodes are sync (the server runs them in threads); its blocking-I/O guard is meant
        # for async code.
        "--allow-blocking", "--config", str(ROOT / "langgraph.json"),
    ]  # fmt: skip
    log = tmp_path / "server.log"
    with log.open("w") as out:
        # cwd: the dev server keeps its in-memory store's snapshot in ./.langgraph_api; the
        # graphs are named by module, so they load from any folder.
        proc = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/ok", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"langgraph dev did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, toml
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_dev_server_lists_the_graphs_and_runs_one(server: tuple[str, Path], tmp_path: Path) -> None:
    from langgraph_sdk import get_sync_client

    url, toml = server
    client = get_sync_client(url=url)
    graphs = sorted(a["graph_id"] for a in client.assistants.search(limit=100))
    assert graphs == sorted(SPEC["graphs"])
    config = load_config(toml, environ={"MMAGENTS_HOME": str(tmp_path / "home")})
    handle = default_store(config).put(Image.new("RGB", (24, 24), (200, 30, 30)))
    out = client.runs.wait(
        None,
        "idealgpt",
        input={"image": handle, "question": "What is it?"},
        context={"max_rounds": 2},  # per-run settings through the server
    )
    assert isinstance(out, dict)
    assert out["answer"] == "cat" and len(out["rounds"]) == 2  # unsure (0.2 < 0.5) until the last
    assert out["vlm_calls"] == 3 and "image" not in out  # the output schema, not the state

"""Finding 8: the small ones (terminal OSError, bearer scheme case, /openapi.json, LLM deadline,
malformed JSON-RPC lines on MCP)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from mmagents.errors import EndpointError
from mmagents.models.fake import ScriptedChat
from mmagents.samples import sample_path

from .conftest import KEY, MODEL, fake_roles_config


def test_terminal_reports_an_oserror_in_image_and_continues(home: Path) -> None:
    from mmagents.graphs.chat_session import ChatAgent
    from mmagents.serve.terminal import run_chat

    config = fake_roles_config(home)
    photo = sample_path("cat", config)
    (config.cache_dir / "images").parent.mkdir(parents=True, exist_ok=True)
    (config.cache_dir / "images").write_text("a file where the image folder should be")
    lines = iter([f"/image {photo}", "hello"])

    def read(prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    out = io.StringIO()
    agent = ChatAgent(config, llm=ScriptedChat(replies=["still here"], cycle=True))
    code = run_chat(config, console=Console(file=out, width=200), read=read, agent=agent)
    assert code == 0
    assert "error:" in out.getvalue() and "still here" in out.getvalue()


@pytest.mark.server
def test_bearer_scheme_is_case_insensitive_and_openapi_needs_the_key(
    home: Path, live_server: Any
) -> None:
    base = live_server(fake_roles_config(home), llm=ScriptedChat(replies=["hi"], cycle=True))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    for scheme in ("bearer", "BEARER", "Bearer"):
        headers = {"Authorization": f"{scheme} {KEY}"}
        answer = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=30)
        assert answer.status_code == 200, scheme
    assert httpx.get(f"{base}/openapi.json", timeout=30).status_code == 401
    good = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{base}/openapi.json", headers=good, timeout=30).status_code == 200
    assert httpx.get(f"{base}/health", timeout=30).status_code == 200
    wrong = {"Authorization": "Basic " + KEY}
    answer = httpx.post(f"{base}/v1/chat/completions", json=body, headers=wrong, timeout=30)
    assert answer.status_code == 401


@pytest.fixture
def hung_endpoint() -> Iterator[str]:
    """A server on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    done.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def test_a_hung_endpoint_fails_within_one_deadline(hung_endpoint: str) -> None:
    from langchain_core.messages import HumanMessage

    from mmagents.models.llm_openai import build_openai_chat

    # Before: each of the 1 + max_retries attempts waited its full timeout (here 4 x 1.5 s, plus
    # back-off); now the whole call ends at the deadline.
    chat = build_openai_chat(
        base_url=hung_endpoint, api_key="x", timeout=1.5, max_retries=3, deadline=2.0
    )
    started = time.monotonic()
    with pytest.raises(EndpointError, match="timed out"):
        chat.invoke([HumanMessage(content="hi")])
    assert time.monotonic() - started < 3.5


@pytest.mark.server
def test_mcp_answers_a_malformed_line_with_a_parse_error(home: Path) -> None:
    script = Path(sys.executable).with_name("mmagents")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mmagents.cli"]
    env = {"MMAGENTS_HOME": str(home), "PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1"}
    for role in ("vlm", "scorer", "ocr", "imagegen", "embed"):
        env[f"MMAGENTS_{role.upper()}__BACKEND"] = "fake"
    done = subprocess.run(
        [*command, "mcp"],
        input='this is not json\n{"jsonrpc": "2.0", "id": 1\n',
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    replies = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(replies) == 2, done.stdout + done.stderr
    for reply in replies:
        assert reply["id"] is None and reply["error"]["code"] == -32700

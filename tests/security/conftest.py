"""A live API server on 127.0.0.1 (uvicorn in a thread) over a chat agent with a scripted planner."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mmagents import Config, load_config

KEY = "sk-security-test"
MODEL = "mmagents-chat"


def fake_roles_config(home: Any, **env: str) -> Config:
    base = {"MMAGENTS_HOME": str(home)}
    for role in ("vlm", "scorer", "ocr", "imagegen", "embed"):
        base[f"MMAGENTS_{role.upper()}__BACKEND"] = "fake"
    return load_config(environ={**base, **env})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live_server() -> Iterator[Callable[..., str]]:
    """``start(config, llm=..., key=KEY)`` → base URL ``http://127.0.0.1:<port>``; stopped after."""
    uvicorn = pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    from langgraph.checkpoint.memory import InMemorySaver

    from mmagents.graphs.chat_session import ChatAgent
    from mmagents.serve.openai_app import ServeSettings, create_app

    servers: list[tuple[Any, threading.Thread]] = []

    def start(config: Config, *, llm: Any, key: str | None = KEY, **serve: Any) -> str:
        agent = ChatAgent(config, llm=llm, checkpointer=InMemorySaver())
        settings = ServeSettings(api_key=key, **serve)
        app = create_app(config, agent=agent, settings=settings)
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


THREAD_HEADER_NAME = "X-MMAgents-Thread"

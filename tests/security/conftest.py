"""A live API server on 127.0.0.1 (uvicorn in a thread) over a chat agent with a scripted planner."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from _servers import serving

from mmagents import Config, load_config

KEY = "sk-security-test"
MODEL = "mmagents-chat"


def fake_roles_config(home: Any, **env: str) -> Config:
    base = {"MMAGENTS_HOME": str(home)}
    for role in ("vlm", "scorer", "ocr", "imagegen", "embed"):
        base[f"MMAGENTS_{role.upper()}__BACKEND"] = "fake"
    return load_config(environ={**base, **env})


@pytest.fixture
def live_server() -> Iterator[Callable[..., str]]:
    """``start(config, llm=..., key=KEY)`` → base URL ``http://127.0.0.1:<port>``; stopped after."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    from langgraph.checkpoint.memory import InMemorySaver

    from mmagents.graphs.chat_session import ChatAgent
    from mmagents.serve.openai_app import ServeSettings, create_app

    def start(config: Config, *, llm: Any, key: str | None = KEY, **serve: Any) -> str:
        agent = ChatAgent(config, llm=llm, checkpointer=InMemorySaver())
        settings = ServeSettings(api_key=key, **serve)
        app = create_app(config, agent=agent, settings=settings)
        port = stack.enter_context(serving(app, log_level="critical"))
        return f"http://127.0.0.1:{port}"

    with ExitStack() as stack:
        yield start


THREAD_HEADER_NAME = "X-MMAgents-Thread"

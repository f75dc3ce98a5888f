"""Finding 2: a streaming client that disconnects never locks its conversation."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from mmagents.models.fake import ScriptedChat

from .conftest import KEY, MODEL, THREAD_HEADER_NAME, fake_roles_config

pytestmark = pytest.mark.server


class SlowStreamingChat(ScriptedChat):
    """Streams its reply one word every 50 ms, like a real model on a slow box."""

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **_: Any
    ) -> Iterator[ChatGenerationChunk]:
        words = self._next(messages).text.split(" ")
        for i, word in enumerate(words):
            time.sleep(0.05)
            text = word if i == 0 else f" {word}"
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
            if run_manager is not None:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk


def _reply(messages: list[BaseMessage]) -> str:
    if messages[-1].text.endswith("quick"):
        return "short answer"
    return " ".join(["word"] * 40)  # about 2 s of streaming


def _start_stream_and_leave(base: str, thread: str) -> None:
    """Send a streaming request, read the first event, then drop the connection."""
    url = urlparse(base)
    message = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "long"}]}
    body = json.dumps(message).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"{THREAD_HEADER_NAME}: {thread}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
        conn.sendall(request)
        received = b""
        while b"data:" not in received:
            piece = conn.recv(4096)
            assert piece, "the server closed the stream before its first event"
            received += piece
        time.sleep(0.1)  # the turn is now running inside its lock


def test_disconnects_release_the_conversation_and_the_pool(home: Path, live_server: Any) -> None:
    base = live_server(fake_roles_config(home), llm=SlowStreamingChat(replies=[_reply], cycle=True))
    headers = {"Authorization": f"Bearer {KEY}", THREAD_HEADER_NAME: "conv"}
    warm = {"model": MODEL, "messages": [{"role": "user", "content": "warm up quick"}]}
    assert httpx.post(f"{base}/v1/chat/completions", json=warm, headers=headers, timeout=30)
    threads_before = threading.active_count()

    for _ in range(10):
        _start_stream_and_leave(base, "conv")

    started = time.monotonic()
    follow = {"model": MODEL, "messages": [{"role": "user", "content": "and now quick"}]}
    answer = httpx.post(f"{base}/v1/chat/completions", json=follow, headers=headers, timeout=30)
    elapsed = time.monotonic() - started
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "short answer"
    # Each abandoned turn stops at its next token: the follow-up waits for at most one of them,
    # not for ten whole turns (and before the fix, forever).
    assert elapsed < 5, f"follow-up took {elapsed:.1f} s"
    deadline = time.monotonic() + 5
    while threading.active_count() > threads_before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert threading.active_count() <= threads_before + 2  # no worker stuck per disconnect

"""The OpenAI-compatible endpoint, driven by the real ``openai`` client over HTTP (uvicorn)."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _servers import free_port, serving
from langchain_core.messages import BaseMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from PIL import Image

from mmagents import Config, load_config
from mmagents.errors import BackendError, ConfigError
from mmagents.graphs.chat_session import ChatAgent
from mmagents.models.fake import ScriptedChat
from mmagents.samples import sample_path

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")
from mmagents.serve.openai_app import THREAD_HEADER, ServeSettings, create_app, serve  # noqa: E402

pytestmark = pytest.mark.server

KEY = "sk-test-key"
MODEL = "mmagents-chat"


def _reply(messages: list[BaseMessage]) -> str:
    """A planner that reports what it was given: the caption if there is one, else the text."""
    last = messages[-1]
    if isinstance(last, ToolMessage):
        # The planner gets the result in a <tool_result> data block; report what is inside.
        return "I see: " + last.text.removeprefix("<tool_result>\n").removesuffix(
            "\n</tool_result>"
        )
    if last.text == "explode":
        raise BackendError("the model endpoint is down")
    turns = sum(m.type == "human" for m in messages)
    return f"you said: {last.text} (turn {turns})"


def _data_url(path_or_image: Path | Image.Image) -> str:
    buffer = io.BytesIO()
    image = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _image_message(url: str, text: str = "What is in this picture?") -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


def _mmagents() -> list[str]:
    """The installed console script (as a user runs it), else the module."""
    script = Path(sys.executable).with_name("mmagents")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mmagents.cli"]


@pytest.fixture(scope="module")
def server_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    home = tmp_path_factory.mktemp("serve-home")
    (home / "c.toml").write_text(
        "[images]\nmax_bytes = 600000\n\n[serve]\nmax_request_bytes = 3000000\n"
    )
    env = {"MMAGENTS_HOME": str(home)}
    for role in ("vlm", "scorer", "ocr", "imagegen", "embed"):
        env[f"MMAGENTS_{role.upper()}__BACKEND"] = "fake"
    return load_config(home / "c.toml", environ=env)


@pytest.fixture(scope="module")
def planner() -> ScriptedChat:
    return ScriptedChat(replies=[_reply], cycle=True)


@pytest.fixture(scope="module")
def base_url(server_config: Config, planner: ScriptedChat) -> Iterator[str]:
    agent = ChatAgent(server_config, llm=planner, checkpointer=InMemorySaver())
    settings = ServeSettings.from_config(server_config, environ={"MMAGENTS_API_KEY": KEY})
    app = create_app(server_config, agent=agent, settings=settings)
    with serving(app) as port:
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def client(base_url: str) -> Any:
    return openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=60)


def test_models_lists_the_agent(client: Any) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "mmagents"


def test_text_completion(client: Any) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}]
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == "you said: hello (turn 1)"


def test_image_data_url_goes_through_a_tool(client: Any, server_config: Config) -> None:
    url = _data_url(sample_path("coffee", server_config))
    reply = client.chat.completions.create(model=MODEL, messages=_image_message(url))
    assert reply.choices[0].message.content.startswith('I see: {"caption": "fake caption')
    calls = reply.model_extra["mmagents"]["tool_calls"]
    assert [c["name"] for c in calls] == ["caption"] and calls[0]["arguments"]["image"].startswith(
        "img_"
    )


def test_streaming_as_server_sent_events(client: Any) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream me"}], stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "you said: stream me (turn 1)"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_earlier_messages_of_a_stateless_request_are_context(client: Any) -> None:
    messages = [
        {"role": "system", "content": "ignored"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages)
    assert reply.choices[0].message.content == "you said: second (turn 2)"


def test_named_conversation_is_one_persistent_thread(client: Any, planner: ScriptedChat) -> None:
    headers = {THREAD_HEADER: "conv-a"}
    first = [{"role": "user", "content": "one"}]
    client.chat.completions.create(model=MODEL, messages=first, extra_headers=headers)
    # The client resends the history; the thread does not duplicate it.
    second = [*first, {"role": "assistant", "content": "x"}, {"role": "user", "content": "two"}]
    reply = client.chat.completions.create(model=MODEL, messages=second, extra_headers=headers)
    assert reply.choices[0].message.content == "you said: two (turn 2)"
    assert "you said: one (turn 1)" in [m.text for m in planner.calls[-1]]
    # The `user` field names a conversation too, separate from the header's.
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], user="conv-b"
    )
    assert reply.choices[0].message.content == "you said: hi (turn 1)"


def test_wrong_or_missing_key_is_401(base_url: str) -> None:
    for key in ("sk-wrong", ""):
        bad = openai.OpenAI(base_url=base_url, api_key=key or "x", max_retries=0)
        if not key:
            bad = bad.with_options(default_headers={"Authorization": ""})
        with pytest.raises(openai.AuthenticationError) as info:
            bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 401 and info.value.code == "invalid_api_key"


def test_oversized_image_is_413(client: Any) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8)
    url = _data_url(Image.fromarray(noise))
    assert 600_000 < len(url) < 3_000_000  # over the image limit, under the request limit
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=_image_message(url))
    assert info.value.status_code == 413 and info.value.code == "image_too_large"
    assert "image_url" in info.value.body["param"]


def test_oversized_request_is_413(client: Any) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x" * 3_100_000}]
        )
    assert info.value.status_code == 413 and info.value.code == "request_too_large"


def test_invalid_requests_get_openai_errors(client: Any) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        (
            {"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]},
            404,
            "model_not_found",
        ),
        (
            {"model": MODEL, "messages": [{"role": "assistant", "content": "x"}]},
            400,
            "last message",
        ),
        ({"model": MODEL, "messages": []}, 400, "invalid request"),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            },
            400,
            "client-side tools",
        ),
        (
            {"model": MODEL, "messages": _image_message("https://example.com/cat.png")},
            400,
            "remote images are disabled",
        ),
    ]
    for body, status, text in cases:
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(**body)
        assert info.value.status_code == status
        error = info.value.body
        assert text in (error.get("message", "") + str(error.get("code")))
        assert set(error) >= {"message", "type", "param", "code"}


def test_backend_failure_is_a_500_with_an_openai_body(client: Any) -> None:
    boom = [{"role": "user", "content": "explode"}]
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=MODEL, messages=boom)
    assert info.value.body["type"] == "server_error"
    assert "BackendError: the model endpoint is down" in info.value.body["message"]
    # Streaming has already sent its headers: the error arrives as an event.
    with pytest.raises(openai.APIError, match="the model endpoint is down"):
        list(client.chat.completions.create(model=MODEL, messages=boom, stream=True))


def test_non_loopback_host_needs_a_key(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMAGENTS_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="without an API key"):
        serve(config, host="0.0.0.0", port=free_port())


@pytest.mark.slow
def test_acceptance_on_the_offline_default(tmp_path: Path) -> None:
    """``mmagents serve`` with a key on the real offline models; openai client with a photo."""
    pytest.importorskip("llama_cpp")
    port = free_port()
    env = {
        **os.environ,
        "MMAGENTS_HOME": str(tmp_path / "home"),
        "MMAGENTS_API_KEY": KEY,
        "MMAGENTS_LLM__MAX_TOKENS": "48",  # short answers keep this test fast on 2 cores
        "HF_HUB_OFFLINE": "1",
    }
    server = subprocess.Popen(
        [*_mmagents(), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 120
        while True:
            try:
                openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0).models.list()
                break
            except openai.APIConnectionError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.5)
        client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=600)
        config = load_config(environ={"MMAGENTS_HOME": str(tmp_path / "home")})
        url = _data_url(sample_path("cat", config))
        reply = client.chat.completions.create(model=MODEL, messages=_image_message(url))
        message = reply.choices[0].message
        assert message.role == "assistant" and message.content.strip()
        assert reply.model_extra["mmagents"]["tool_calls"][0]["name"] == "caption"
        keyless = openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            keyless.chat.completions.create(model=MODEL, messages=_image_message(url))
    finally:
        server.terminate()
        server.wait(30)

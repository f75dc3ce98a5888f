"""Sampling parameters on the OpenAI server, per request, with the real ``openai`` client.

Fake backends: :class:`ScriptedChat` honours ``max_tokens`` (as words) and ``stop``; the test double
:class:`EchoSampling` declares every parameter and answers with the values it was called with, so
concurrent requests show whether their parameters mixed. One slow test runs the real llama.cpp
model (SmolLM2-135M).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest
from _servers import serving
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver

from mmagents import Config, load_config
from mmagents.graphs.chat_session import AnswerEvent, ChatAgent
from mmagents.models.fake import ScriptedChat
from mmagents.models.sampling import SAMPLING_PARAMS, Sampling, StopCutter

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")
from mmagents.serve.openai_app import ServeSettings, create_app  # noqa: E402

pytestmark = pytest.mark.server

MODEL = "mmagents-chat"
WORDS = "one two three four five six seven eight"


class EchoSampling(ScriptedChat):
    """Test double: honours every sampling parameter by reporting it; slow enough to overlap."""

    sampling_params: ClassVar[frozenset[str]] = SAMPLING_PARAMS

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        time.sleep(0.05)  # concurrent requests are in flight together
        shown = {k: kwargs.get(k) for k in ("temperature", "seed", "top_p")}
        text = " ".join(f"{k}={v}" for k, v in shown.items())
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def _words(messages: list[BaseMessage]) -> AIMessage:
    return AIMessage(
        content=WORDS,
        usage_metadata={"input_tokens": 10, "output_tokens": 8, "total_tokens": 18},
    )


def _config(tmp: Path) -> Config:
    env = {"MMAGENTS_HOME": str(tmp)}
    for role in ("vlm", "scorer", "ocr", "imagegen", "embed"):
        env[f"MMAGENTS_{role.upper()}__BACKEND"] = "fake"
    return load_config(environ=env)


@contextmanager
def _serving(config: Config, agent: ChatAgent) -> Iterator[Any]:
    settings = ServeSettings.from_config(config, environ={})
    app = create_app(config, agent=agent, settings=settings)
    with serving(app) as port:
        yield openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=600
        )


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ScriptedChat]]:
    config = _config(tmp_path_factory.mktemp("sampling-scripted"))
    llm = ScriptedChat(replies=[_words], cycle=True)
    agent = ChatAgent(config, llm=llm, tools=[], checkpointer=InMemorySaver())
    with _serving(config, agent) as client:
        yield client, llm


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    config = _config(tmp_path_factory.mktemp("sampling-echo"))
    llm = EchoSampling(replies=[])
    agent = ChatAgent(config, llm=llm, tools=[], checkpointer=InMemorySaver())
    with _serving(config, agent) as client:
        yield client


def _ask(client: Any, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "count"}], **kwargs
    )


def _streamed(client: Any, **kwargs: Any) -> tuple[str, str | None, Any]:
    chunks = list(
        _ask(client, stream=True, stream_options={"include_usage": True}, **kwargs)  # type: ignore[arg-type]
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = next(
        (c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason),
        None,
    )
    return text, finish, chunks[-1].usage


# -- fake backends ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_cuts_the_answer_and_bounds_usage(scripted: Any, field: str) -> None:
    client, _ = scripted
    reply = _ask(client, **{field: 3})
    assert reply.choices[0].message.content == "one two three"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3
    text, finish, usage = _streamed(client, **{field: 3})
    assert (text, finish, usage.completion_tokens) == ("one two three", "length", 3)
    whole = _ask(client)
    assert whole.choices[0].message.content == WORDS and whole.choices[0].finish_reason == "stop"
    assert whole.usage.completion_tokens == 8


def test_stop_cuts_before_the_stop_string(scripted: Any) -> None:
    client, llm = scripted
    reply = _ask(client, stop=" four")
    assert reply.choices[0].message.content == "one two three"
    assert reply.choices[0].finish_reason == "stop"
    assert llm.call_kwargs[-1]["stop"] == [" four"]  # a lone string became a list
    text, finish, _ = _streamed(client, stop=["five", "three"])
    assert (text, finish) == ("one two ", "stop")


def test_parameters_do_not_outlive_their_request(scripted: Any) -> None:
    client, llm = scripted
    _ask(client, max_tokens=2, stop=["x"])
    _ask(client)
    assert "max_tokens" not in llm.call_kwargs[-1] and "stop" not in llm.call_kwargs[-1]


def test_backend_without_the_parameter_is_a_400_naming_it(scripted: Any) -> None:
    client, _ = scripted
    for field, value in [("temperature", 0.5), ("seed", 3), ("frequency_penalty", 0.1)]:
        with pytest.raises(openai.BadRequestError) as info:
            _ask(client, **{field: value})
        body = info.value.body
        assert body["param"] == field and "ScriptedChat" in body["message"]
        assert "max_tokens, stop" in body["message"]  # what it does honour


def test_bad_values_and_conflicts_are_400s(scripted: Any) -> None:
    client, _ = scripted
    cases: list[tuple[dict[str, Any], str]] = [
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_tokens": 3, "max_completion_tokens": 4}, "max_completion_tokens"),
        ({"n": 3}, "n"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as info:
            _ask(client, **kwargs)
        assert info.value.body["param"] == param, kwargs


def test_concurrent_requests_keep_their_own_temperature(echo: Any) -> None:
    temperatures = [round(0.1 * i, 1) for i in range(1, 9)]

    def plain(t: float) -> str:
        return str(_ask(echo, temperature=t, seed=int(t * 10)).choices[0].message.content)

    def streamed(t: float) -> str:
        return _streamed(echo, temperature=t, seed=int(t * 10))[0]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(plain, temperatures)) + list(pool.map(streamed, temperatures))
    expected = [f"temperature={t} seed={int(t * 10)} top_p=None" for t in temperatures]
    assert answers == expected + expected
    assert _ask(echo).choices[0].message.content == "temperature=None seed=None top_p=None"


# -- the graph: max_tokens is the turn's budget for the planner ---------------------------------


def _tool_then_answer(tmp: Path, replies: list[Any]) -> tuple[ChatAgent, ScriptedChat]:
    config = _config(tmp)
    llm = ScriptedChat(replies=replies)
    return ChatAgent(config, llm=llm, tools=["caption"], checkpointer=InMemorySaver()), llm


def _call(image: str = "img_0123456789abcdef") -> AIMessage:
    call = {"name": "caption", "args": {"image": image}, "id": "call_1"}
    usage = {"input_tokens": 5, "output_tokens": 5, "total_tokens": 10}
    return AIMessage(content="", tool_calls=[call], usage_metadata=usage)  # type: ignore[arg-type]


def test_each_planner_call_gets_what_the_turn_left(tmp_path: Path) -> None:
    agent, llm = _tool_then_answer(tmp_path, [_call(), "a b c d e f g h"])
    events = list(agent.turn("t", "what is it?", sampling=Sampling(max_tokens=8)))
    answer = events[-1]
    assert isinstance(answer, AnswerEvent)
    assert [k.get("max_tokens") for k in llm.call_kwargs] == [8, 3]  # 5 went on the tool call
    assert (answer.text, answer.finish_reason) == ("a b c", "length")


def test_a_budget_spent_on_tools_ends_the_turn_with_length(tmp_path: Path) -> None:
    agent, llm = _tool_then_answer(tmp_path, [_call()])
    answer = list(agent.turn("t", "what is it?", sampling=Sampling(max_tokens=5)))[-1]
    assert isinstance(answer, AnswerEvent) and answer.finish_reason == "length"
    assert "max_tokens (5)" in answer.text and len(llm.calls) == 1


# -- backends ------------------------------------------------------------------------------------


def test_stop_cutter_holds_back_a_possible_stop_string() -> None:
    cutter = StopCutter(["END"])
    assert [cutter.feed(p) for p in ["ab", "cE", "N", "Dx"]] == ["", "ab", "c", ""]
    assert cutter.stopped and cutter.flush() == ""
    other = StopCutter(["END"])
    assert other.feed("abcEN") + other.flush() == "abcEN"


def test_openai_backend_forwards_them_per_request() -> None:
    pytest.importorskip("langchain_openai")
    from mmagents.models._openai import make_chat

    chat = make_chat(
        base_url="http://127.0.0.1:9/v1",
        model="m",
        api_key=None,
        temperature=0.2,
        max_tokens=512,
        timeout=5,
        max_retries=0,
    )
    given = {
        "temperature": 0.9,
        "top_p": 0.5,
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
    }
    payload = chat._get_request_payload([HumanMessage("x")], stop=["\n"], max_tokens=16, **given)
    assert {k: payload[k] for k in given} == given and payload["stop"] == ["\n"]
    assert payload["max_completion_tokens"] == 16 and payload["extra_body"]["max_tokens"] == 16
    default = chat._get_request_payload([HumanMessage("x")])
    assert default["temperature"] == 0.2 and default["extra_body"]["max_tokens"] == 512
    assert chat.temperature == 0.2  # the shared model object is unchanged


# -- the real llama.cpp model --------------------------------------------------------------------


@pytest.mark.slow
def test_llamacpp_max_tokens_and_stop_through_the_server(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from langchain_core.tools import tool

    from mmagents.models.llm_llamacpp import LlamaCppChat

    config = _config(tmp_path)
    llm = LlamaCppChat(model="smollm2-135m", max_tokens=64, temperature=0.0)
    agent = ChatAgent(config, llm=llm, tools=[], checkpointer=InMemorySaver())
    prompt = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
    with _serving(config, agent) as client:
        free = client.chat.completions.create(model=MODEL, messages=prompt)
        assert free.usage.completion_tokens > 6 and "\n" in free.choices[0].message.content
        short = client.chat.completions.create(model=MODEL, messages=prompt, max_tokens=6)
        assert short.usage.completion_tokens <= 6 and short.choices[0].finish_reason == "length"
        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                messages=prompt,
                max_completion_tokens=6,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].usage.completion_tokens <= 6
        assert any(c.choices and c.choices[0].finish_reason == "length" for c in chunks)
        stopped = client.chat.completions.create(model=MODEL, messages=prompt, stop=["\n"])
        text = stopped.choices[0].message.content
        assert text and "\n" not in text
        assert stopped.usage.completion_tokens < free.usage.completion_tokens

    @tool
    def caption(image: str) -> str:
        """Describe the image with this handle in one sentence."""
        return "a cat"

    # With tools bound, stop and max_tokens act on the answer text, never on the JSON around it.
    answering = llm.bind_tools([caption], tool_choice="none")
    question = [HumanMessage("Count from 1 to 20, separated by commas.")]
    cut = answering.invoke(question, stop=["\n", ","])
    assert cut.text and "\n" not in cut.text and "," not in cut.text
    assert not cut.text.lstrip().startswith("{")
    partial = answering.invoke(question, max_tokens=8)
    assert partial.response_metadata["finish_reason"] == "length"
    assert not partial.text.lstrip().startswith("{")

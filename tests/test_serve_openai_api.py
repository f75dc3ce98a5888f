"""The OpenAI server's API surface, with the real ``openai`` client: ``usage`` (plain and
streamed) and sampling fields the backend cannot honour refused with a 400 that names them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from _servers import serving
from langchain_core.messages import AIMessage, BaseMessage
from langgraph.checkpoint.memory import InMemorySaver

from mmagents import Config, load_config
from mmagents.graphs.chat_session import ChatAgent
from mmagents.models.fake import ScriptedChat

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")
from mmagents.serve.openai_app import ServeSettings, create_app  # noqa: E402

pytestmark = pytest.mark.server

KEY = "sk-test-key"
MODEL = "mmagents-chat"


def _reply(messages: list[BaseMessage]) -> AIMessage:
    """An answer that reports its token counts as a real backend does (usage_metadata)."""
    prompt = sum(len(str(m.content).split()) for m in messages)
    if "<answer>" in messages[-1].text:  # the structured-output step: JSON, as asked
        said = messages[-1].text.rpartition("<answer>\n")[2].partition("\n</answer>")[0]
        content = json.dumps({"answer": said, "words": len(said.split())})
        usage = {"input_tokens": prompt, "output_tokens": 9, "total_tokens": prompt + 9}
        return AIMessage(content=content, usage_metadata=usage)  # type: ignore[arg-type]
    return AIMessage(
        content=f"you said: {messages[-1].text}",
        usage_metadata={"input_tokens": prompt, "output_tokens": 4, "total_tokens": prompt + 4},
    )


@pytest.fixture(scope="module")
def planner() -> ScriptedChat:
    return ScriptedChat(replies=[_reply], cycle=True)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, planner: ScriptedChat) -> Iterator[str]:
    home = tmp_path_factory.mktemp("serve-api-home")
    env = {"MMAGENTS_HOME": str(home)}
    for role in ("vlm", "scorer", "ocr", "imagegen", "embed"):
        env[f"MMAGENTS_{role.upper()}__BACKEND"] = "fake"
    config: Config = load_config(environ=env)
    agent = ChatAgent(config, llm=planner, checkpointer=InMemorySaver())
    settings = ServeSettings.from_config(config, environ={"MMAGENTS_API_KEY": KEY})
    app = create_app(config, agent=agent, settings=settings)
    with serving(app) as port:
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def client(base_url: str) -> Any:
    return openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=60)


def test_usage_counts_the_turns_llm_calls(client: Any) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}]
    )
    usage = reply.usage
    assert reply.choices[0].message.content == "you said: hello there"
    assert usage.completion_tokens == 4 and usage.prompt_tokens > 2  # the agent's prompt + ours
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streamed_usage_comes_last_when_asked(client: Any) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "stream me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "you said: stream me"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    plain = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "again"}], stream=True
        )
    )
    assert all(c.usage is None for c in plain)  # not asked: no usage chunk


@pytest.mark.parametrize(
    ("field", "value"),
    [
        # ScriptedChat honours max_tokens and stop only (tests/test_serve_sampling.py): a
        # script has no temperature, nucleus, seed or penalties to honour.
        ("temperature", 0.2),
        ("top_p", 0.9),
        ("seed", 1),
        ("presence_penalty", 0.5),
        # Never honoured by the agent, whatever the backend.
        ("logit_bias", {"50256": -100}),
        ("response_format", {"type": "json_object"}),
        ("n", 2),
    ],
)
def test_sampling_fields_are_refused_by_name(client: Any, field: str, value: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], **{field: value}
        )
    assert info.value.body["param"] == field and field in info.value.body["message"]


def test_defaults_a_client_sends_are_accepted(client: Any) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "ok"}], n=1, logprobs=False
    )
    assert reply.choices[0].message.content == "you said: ok"


def test_client_system_messages_become_instructions(client: Any, planner: ScriptedChat) -> None:
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "bonjour"},
        ],
    )
    system = planner.calls[-1][0]
    assert system.type == "system" and system.text.endswith(
        "Instructions from the client:\nAnswer in French."
    )
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "plain"}])
    assert "Instructions from the client" not in planner.calls[-1][0].text  # this turn only


def test_client_instructions_can_be_switched_off() -> None:
    from mmagents.serve.openai_app import _ChatRequest, _turn_of

    request = _ChatRequest.model_validate(
        {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use lists."}]},
                {"role": "user", "content": "hi"},
            ],
        }
    )
    agent: Any = object()  # text-only and stateless: the agent is not consulted
    assert _turn_of(request, None, agent).instructions == "Be brief.\nUse lists."
    assert _turn_of(request, None, agent, client_instructions=False).instructions == ""


SCHEMA = {
    "name": "reply",
    "schema": {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "words": {"type": "integer"}},
        "required": ["answer", "words"],
    },
}


def test_json_schema_answers_through_the_structured_path(client: Any) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "count these words"}],
        response_format={"type": "json_schema", "json_schema": SCHEMA},
    )
    assert json.loads(reply.choices[0].message.content) == {
        "answer": "you said: count these words",
        "words": 5,
    }
    assert reply.usage.completion_tokens == 4 + 9  # the turn's call and the structured one


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"$ref": "#/x"}},
                }
            },
            "object schema",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "schema": {"type": "object", "properties": {"a": {"oneOf": []}}}
                    },
                }
            },
            "schema.a: unsupported keyword",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": SCHEMA}, "stream": True},
            "cannot stream",
        ),
    ],
)
def test_json_schema_outside_the_subset_is_a_400(
    client: Any, extra: dict[str, Any], match: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], **extra
        )
    assert info.value.body["param"] == "response_format" and match in info.value.body["message"]

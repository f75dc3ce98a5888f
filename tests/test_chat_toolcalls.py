"""Tool calling through grammar-constrained JSON (LlamaCppChat.bind_tools and its helpers)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from mmagents import Config
from mmagents.models._tool_grammar import (
    AnswerStream,
    decision_message,
    decision_schema,
    format_tools,
    handles_in,
)
from mmagents.models.llm_llamacpp import LlamaCppChat
from mmagents.tools import build_tools

HANDLE = "img_0123456789abcdef"


@pytest.fixture
def specs(fake_config: Config) -> list[dict[str, Any]]:
    return format_tools(build_tools(fake_config, ["caption", "answer_question"]))


def test_schema_has_one_branch_per_tool_plus_answer(specs: list[dict[str, Any]]) -> None:
    schema = decision_schema(specs, handles=[HANDLE])
    branches = schema["anyOf"]
    assert [b["properties"].get("tool", {}).get("const") for b in branches] == [
        "caption",
        "answer_question",
        None,
    ]
    assert branches[2]["required"] == ["answer"]
    # Image handles may only be the ones in the conversation.
    image = branches[0]["properties"]["arguments"]["properties"]["image"]
    assert image["enum"] == [HANDLE] and "pattern" not in image
    # tool_choice narrows the choice.
    assert "anyOf" not in decision_schema(specs, tool_choice="none")
    forced = decision_schema(specs, tool_choice="caption")
    assert forced["properties"]["tool"] == {"const": "caption"}
    assert len(decision_schema(specs, tool_choice="any")["anyOf"]) == 2


def test_handles_are_found_in_any_message() -> None:
    other = "img_fedcba9876543210"
    messages = [
        HumanMessage(f"[image {HANDLE} attached] hi"),
        ToolMessage(json.dumps({"image": other}), tool_call_id="1"),
        HumanMessage(f"again {HANDLE}"),
    ]
    assert handles_in(messages) == [HANDLE, other]


def test_decision_message_builds_tool_calls_or_answers() -> None:
    call = decision_message(
        json.dumps({"tool": "caption", "arguments": {"image": HANDLE}}), ["caption"]
    )
    assert call.content == "" and call.tool_calls[0]["name"] == "caption"
    assert call.tool_calls[0]["args"] == {"image": HANDLE}
    assert call.tool_calls[0]["id"].startswith("call_")
    answer = decision_message('{"answer": "a cat"}', ["caption"])
    assert answer.content == "a cat" and not answer.tool_calls
    # Not a decision (unknown tool, or no JSON): kept as text rather than lost.
    assert decision_message('{"tool": "rm", "arguments": {}}', ["caption"]).tool_calls == []
    assert decision_message("just words", ["caption"]).content == "just words"


def test_answer_stream_decodes_as_it_arrives() -> None:
    stream = AnswerStream()
    pieces = ['{ "ans', 'wer": "He said \\', '"hi\\"', " \\u00e9", "t\\u", "00e9\\n", 'x"}']
    out = [stream.feed(p) for p in pieces]
    assert out[0] == "" and stream.started
    assert "".join(out) == 'He said "hi" été\nx'
    assert stream.closed
    tool = AnswerStream()
    assert tool.feed('{"tool": "caption", "arguments": {}}') == "" and not tool.started


class _FakeLlama:
    """Stands in for ``llama_cpp.Llama``: records requests, replays one completion."""

    def __init__(self, content: str) -> None:
        self.content = content
        self.requests: list[dict[str, Any]] = []

    def create_chat_completion(self, **request: Any) -> Any:
        self.requests.append(request)
        if request.get("stream"):
            return iter(
                [
                    {"choices": [{"delta": {"content": self.content[i : i + 3]}}]}
                    for i in range(0, len(self.content), 3)
                ]
            )
        return {
            "choices": [{"message": {"content": self.content}, "finish_reason": "stop"}],
            "usage": {},
        }


def _bound(
    monkeypatch: pytest.MonkeyPatch, fake_config: Config, reply: str
) -> tuple[Any, _FakeLlama]:
    client = _FakeLlama(reply)
    monkeypatch.setattr(LlamaCppChat, "_client", lambda self: client)
    tools = build_tools(fake_config, ["caption", "answer_question"])
    return LlamaCppChat().bind_tools(tools), client


def test_bound_call_sends_the_decision_grammar(
    monkeypatch: pytest.MonkeyPatch, fake_config: Config
) -> None:
    reply = json.dumps(
        {"tool": "answer_question", "arguments": {"image": HANDLE, "question": "what?"}}
    )
    bound, client = _bound(monkeypatch, fake_config, reply)
    message = bound.invoke(
        [SystemMessage("be brief"), HumanMessage(f"[image {HANDLE} attached] what?")]
    )

    assert isinstance(message, AIMessage)
    assert message.tool_calls[0]["name"] == "answer_question"
    assert message.tool_calls[0]["args"]["question"] == "what?"
    request = client.requests[0]
    assert request["response_format"]["type"] == "json_object"
    assert len(request["response_format"]["schema"]["anyOf"]) == 3
    system = request["messages"][0]["content"]
    assert system.startswith("be brief") and "- caption(image):" in system
    assert "tools" not in request and "tool_choice" not in request


def test_bound_stream_yields_answer_tokens(
    monkeypatch: pytest.MonkeyPatch, fake_config: Config
) -> None:
    bound, _ = _bound(monkeypatch, fake_config, '{"answer": "a small tabby cat"}')
    chunks = list(bound.stream([HumanMessage("hi")]))
    text = "".join(str(c.content) for c in chunks)
    assert text == "a small tabby cat" and sum(bool(c.content) for c in chunks) > 2


def test_bound_stream_assembles_a_tool_call(
    monkeypatch: pytest.MonkeyPatch, fake_config: Config
) -> None:
    bound, _ = _bound(
        monkeypatch, fake_config, json.dumps({"tool": "caption", "arguments": {"image": HANDLE}})
    )
    merged = None
    for chunk in bound.stream([HumanMessage(f"[image {HANDLE} attached]")]):
        assert not chunk.content
        merged = chunk if merged is None else merged + chunk
    assert merged is not None and merged.tool_calls[0]["args"] == {"image": HANDLE}


def test_unbound_calls_are_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _FakeLlama("plain text")
    monkeypatch.setattr(LlamaCppChat, "_client", lambda self: client)
    assert LlamaCppChat().invoke("hi").content == "plain text"
    assert "response_format" not in client.requests[0]


@pytest.mark.slow
def test_real_small_model_emits_a_valid_call(fake_config: Config) -> None:
    """SmolLM2-135M, forced to call a tool, produces a call that validates against the tool."""
    pytest.importorskip("llama_cpp")
    tools = build_tools(fake_config, ["caption", "answer_question"])
    llm = LlamaCppChat(model="smollm2-135m", max_tokens=64, temperature=0.0)
    question = HumanMessage(f"[image {HANDLE} attached] What colour is the cat?")
    message = llm.bind_tools(tools, tool_choice="any").invoke([question])
    assert len(message.tool_calls) == 1
    call = message.tool_calls[0]
    tool = next(t for t in tools if t.name == call["name"])
    assert tool.args_schema is not None
    tool.args_schema.model_validate(call["args"])  # type: ignore[union-attr]
    assert call["args"]["image"] == HANDLE


def test_bound_stream_is_lazy_and_errors_are_typed(
    monkeypatch: pytest.MonkeyPatch, fake_config: Config
) -> None:
    from mmagents.errors import BackendError

    bound, client = _bound(monkeypatch, fake_config, '{"answer": "one two three four five"}')
    pulled: list[int] = []
    original = client.create_chat_completion

    def counting(**request: Any) -> Any:
        for i, event in enumerate(original(**request)):
            pulled.append(i)
            yield event

    monkeypatch.setattr(client, "create_chat_completion", counting)
    stream = bound.stream([HumanMessage("hi")])
    next(c for c in stream if c.content)
    assert len(pulled) < 8  # the first token went out before the reply was complete
    stream.close()

    def too_long(**request: Any) -> Any:
        raise ValueError("Requested tokens exceed context window")

    monkeypatch.setattr(client, "create_chat_completion", too_long)
    with pytest.raises(BackendError, match="context window"):
        list(bound.stream([HumanMessage("hi")]))

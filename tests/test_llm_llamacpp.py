"""The llama.cpp backend on real weights.

Plumbing runs on the fast test model (SmolLM2-135M, zoo ``smollm2-135m``); grammar-constrained JSON
and tool calls are also checked on the offline default planner (Qwen2.5-Coder-0.5B, zoo
``qwen2.5-coder-0.5b``), whose chat template differs.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from mmagents.models.llm_llamacpp import LlamaCppChat, default_gguf_path, to_llama_messages
from mmagents.models.structured import invoke_structured

pytest.importorskip("llama_cpp")


class Color(BaseModel):
    name: str = Field(max_length=40)
    is_warm: bool


class Scene(BaseModel):
    objects: list[str] = Field(min_length=1, max_length=3)
    indoors: bool
    people: int = Field(ge=0)


@tool
def caption(image: str) -> str:
    """Describe the image with this handle in one sentence."""
    return "a cat on a sofa"


@tool
def count_objects(image: str, name: str) -> int:
    """Count how many of the named object are in the image with this handle."""
    return 1


@pytest.fixture(scope="module")
def llm() -> LlamaCppChat:
    return LlamaCppChat(model="smollm2-135m", max_tokens=48, temperature=0.0)


@pytest.fixture(scope="module")
def qwen() -> LlamaCppChat:
    return LlamaCppChat(model="qwen2.5-coder-0.5b", max_tokens=96, temperature=0.0)


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


def test_default_model_is_the_zoo_planner() -> None:
    assert LlamaCppChat().model == "qwen2.5-coder-0.5b"


def test_qwen_grammar_constrained_json(qwen: LlamaCppChat) -> None:
    messages = [
        HumanMessage("A photo shows two children and a dog playing on a beach. Describe it.")
    ]
    result = invoke_structured(qwen, Scene, messages)
    assert result.attempts == 1
    assert result.value.indoors is False and "dog" in result.value.objects


def test_qwen_tool_calls_follow_the_tools(qwen: LlamaCppChat) -> None:
    tools = [caption, count_objects]
    call = (
        qwen.bind_tools(tools)
        .invoke([HumanMessage("Please describe the image img_0a1b2c3d4e5f6a7b.")])
        .tool_calls
    )
    assert [(c["name"], c["args"]) for c in call] == [
        ("caption", {"image": "img_0a1b2c3d4e5f6a7b"})
    ]
    forced = (
        qwen.bind_tools(tools, tool_choice="count_objects")
        .invoke([HumanMessage("How many dogs are in image img_0a1b2c3d4e5f6a7b?")])
        .tool_calls
    )
    assert forced[0]["name"] == "count_objects"
    assert forced[0]["args"]["image"] == "img_0a1b2c3d4e5f6a7b"
    assert "dog" in forced[0]["args"]["name"].lower()
    answer = qwen.bind_tools(tools, tool_choice="none").invoke([HumanMessage("Say hello.")])
    assert not answer.tool_calls and str(answer.content).strip()


def test_saved_prefix_is_restored_and_changes_nothing(llm: LlamaCppChat) -> None:
    """A system prompt seen before is restored from its saved state; the answer is the same."""
    system_a = SystemMessage("You are a terse assistant. Answer every question in one word. " * 4)
    system_b = SystemMessage("You translate English into French.")
    question = HumanMessage("What colour is the sky on a clear day?")
    llm.invoke([system_a, HumanMessage("What is two plus two?")])
    llm.invoke([system_b, HumanMessage("Good morning.")])
    reply = llm.invoke([system_a, question])
    assert reply.response_metadata["prefix_cache"] == "restored"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_token_details"]["cache_read"] > 40
    # Another context (n_ctx differs), no saved states: the same tokens come out.
    fresh = LlamaCppChat(
        model="smollm2-135m", max_tokens=48, temperature=0.0, n_ctx=2048, prefix_states=0
    )
    plain = fresh.invoke([system_a, question])
    assert plain.content == reply.content
    assert plain.response_metadata["prefix_cache"] == "none"

"""The one structured-agent factory: every role in agents/ is built by it, sync and async."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
from pathlib import Path

import pytest
from langchain_core.runnables import Runnable
from pydantic import BaseModel

from mmagents.agents import factory
from mmagents.agents.meme_labels import LABELS, SYNONYMS, normalise_label
from mmagents.errors import StructuredOutputError
from mmagents.eval.normalize import build_normalizer
from mmagents.models.fake import ScriptedChat
from mmagents.prompts import load_prompt, render_messages

ROLES = (
    "questioner",
    "reasoner",
    "cue_writer",
    "descriptor_writer",
    "rationale_writer",
    "step_planner",
    "coherence_judge",
    "comm_judge",
)
AGENTS = Path(__file__).resolve().parents[1] / "agents"


class Echo(BaseModel):
    word: str


def _messages(inputs: dict) -> list:
    return render_messages("descriptor_writer", "default", min_items=2, max_items=3, **inputs)


def test_structured_agent_runs_sync_and_async_with_repairs() -> None:
    llm = ScriptedChat(replies=["no json", json.dumps({"word": "cat"})], cycle=True)
    agent = factory.structured_agent(llm, "echo", schema=Echo, messages=_messages)
    assert agent.name == "echo"
    out = agent.invoke({"class_name": "cat"})
    assert out.value.word == "cat" and out.attempts == 2
    again = asyncio.run(agent.ainvoke({"class_name": "cat"}))
    assert again.value.word == "cat" and again.attempts == 2


def test_schema_may_be_chosen_per_input() -> None:
    class Strict(BaseModel):
        word: str
        n: int

    llm = ScriptedChat(replies=[json.dumps({"word": "x"})], cycle=True)
    agent = factory.structured_agent(
        llm,
        "echo",
        schema=lambda inputs: Strict if inputs.get("strict") else Echo,
        messages=lambda inputs: _messages({"class_name": "x"}),
        max_repairs=0,
    )
    assert agent.invoke({"strict": False}).value.word == "x"
    with pytest.raises(StructuredOutputError):
        agent.invoke({"strict": True})


def test_stepwise_agent_sends_each_answer_back() -> None:
    llm = ScriptedChat(replies=[json.dumps({"word": "a"}), json.dumps({"word": "b"})])

    def steps(inputs: dict) -> factory.Steps[str]:
        first = yield Echo, _messages(inputs)
        second = yield Echo, _messages({"class_name": first.value.word})
        return first.value.word + second.value.word

    agent = factory.stepwise_agent(llm, "twice", steps)
    assert agent.invoke({"class_name": "x"}) == "ab"
    assert "b" not in str(llm.calls[0][-1].content) and "a" in str(llm.calls[1][-1].content)


@pytest.mark.parametrize("role", ROLES)
def test_every_role_is_built_by_the_factory(role: str) -> None:
    module = importlib.import_module(f"mmagents.agents.{role}")
    assert module.prompt_version() == load_prompt(role).version
    source = (AGENTS / f"{role}.py").read_text("utf-8")
    # One repair path: no role calls the structured-output loop or builds a RunnableLambda itself.
    for private in ("invoke_structured(", "RunnableLambda("):
        assert private not in source, f"{role} calls {private} directly"
    (builder,) = [
        fn for name, fn in inspect.getmembers(module, inspect.isfunction) if name == f"build_{role}"
    ]
    agent = builder(ScriptedChat(replies=["{}"]))
    assert isinstance(agent, Runnable) and agent.name == role


def test_descriptor_and_cue_writers_render_their_defaults() -> None:
    from mmagents.agents.cue_writer import build_cue_writer
    from mmagents.agents.descriptor_writer import build_descriptor_writer

    reply = json.dumps({"visual_features": ["a long tail", "- whiskers.", "whiskers"]})
    llm = ScriptedChat(replies=[reply])
    answer = build_descriptor_writer(llm).invoke({"class_name": "tabby cat"})
    assert answer.value.visual_features == ["a long tail", "whiskers"]
    assert "tabby cat" in str(llm.calls[0][-1].content)
    cues = {
        "subject_cues": ["legs"],
        "object_cues": ["flat top"],
        "spatial_cues": ["above"],
        "reasoning": "r",
        "weights": {"subject": 1, "object": 1, "spatial": 1},
        "plausible": True,
    }
    llm = ScriptedChat(replies=[json.dumps(cues)])
    out = asyncio.run(
        build_cue_writer(llm).ainvoke({"predicate": "on", "subject": "cat", "object": "table"})
    )
    assert out.value.plausible and "on" in str(llm.calls[0][-1].content)


def test_one_meme_label_vocabulary_for_training_and_scoring() -> None:
    score_side = build_normalizer("meme_label")
    for canonical, spellings in SYNONYMS.items():
        for spelling in (canonical, *spellings, canonical.upper(), f" {canonical} "):
            assert normalise_label(spelling) == canonical
            assert score_side(spelling) == canonical
    # The two spellings that used to be known to only one side.
    for spelling in ("partially harmful", "offensive"):
        assert normalise_label(spelling) == score_side(spelling) == "harmful"
    assert normalise_label(1) == score_side(1) == "harmful" and score_side(0) == "harmless"
    assert LABELS == ("harmless", "harmful")
    with pytest.raises(ValueError, match="unknown meme label"):
        normalise_label("maybe")
    with pytest.raises(ValueError):
        normalise_label(True)
    assert score_side("maybe") == "maybe"  # an unknown answer is simply wrong

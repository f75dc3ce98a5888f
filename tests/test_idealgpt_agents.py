"""IdealGPT's questioner and reasoner agents: prompts, schemas, choice matching, sync and async."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from mmagents import StructuredOutputError
from mmagents.agents.questioner import build_questioner, questioner_messages, sub_questions_schema
from mmagents.agents.reasoner import build_reasoner, match_choice, reasoning_schema
from mmagents.models.fake import ScriptedChat


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cat", "cat"),
        (" Cat. ", "cat"),
        ("2", "cat"),
        ("Answer 2", "cat"),
        ("I think it is a cat", "cat"),
        ("a dog or a cat", None),  # names two choices
        ("a bird", None),
        ("", None),
        ("5", None),
    ],
)
def test_match_choice(text: str, expected: str | None) -> None:
    assert match_choice(text, ["dog", "cat"]) == expected


def test_reasoning_schemas() -> None:
    normal, final = reasoning_schema(), reasoning_schema((), True)
    assert normal.model_validate({"analysis": "a", "answer": "", "confidence": 0}).answer == ""
    with pytest.raises(ValidationError):
        final.model_validate({"analysis": "a", "answer": " ", "confidence": 0.5})
    assert (
        normal.model_validate({"analysis": "a", "answer": "x", "confidence": 85}).confidence == 0.85
    )
    with pytest.raises(ValidationError):
        normal.model_validate({"analysis": "a", "answer": "x", "confidence": 450})
    mc = reasoning_schema(("dog", "cat"), True)
    assert mc.model_json_schema()["properties"]["answer"]["enum"] == ["dog", "cat"]
    with pytest.raises(ValidationError):
        mc.model_validate({"analysis": "a", "answer": "bird", "confidence": 1})
    assert reasoning_schema(("dog", "cat"), True) is mc  # cached per (choices, final)


def test_sub_question_schema_bounds() -> None:
    schema = sub_questions_schema(2)
    assert schema.model_json_schema()["properties"]["sub_questions"]["maxItems"] == 2
    with pytest.raises(ValidationError):
        schema.model_validate({"sub_questions": ["What a?", "What b?", "What c?"]})
    with pytest.raises(ValidationError):
        schema.model_validate({"sub_questions": []})
    with pytest.raises(ValueError):
        sub_questions_schema(0)


def test_questioner_variants() -> None:
    first = questioner_messages({"question": "Q?", "caption": "cap"}, max_sub_questions=3)
    assert "at most 3 sub-questions" in str(first[1].content)
    assert "Choices" not in str(first[1].content)
    # The system prompt is the same for every question (llama.cpp reuses its saved state).
    other = questioner_messages({"question": "R?", "caption": "c2"}, max_sub_questions=3)
    assert first[0].content == other[0].content
    later = questioner_messages(
        {
            "question": "Q?",
            "caption": "cap",
            "choices": ["x", "y"],
            "sub_answers": [{"question": "What is it?", "answer": "a cat"}],
            "analysis": "not enough",
        },
        max_sub_questions=2,
    )
    assert "new short sub-questions" in str(later[0].content)
    user = str(later[1].content)
    assert "Answer 2: y" in user and "at most 2 new sub-questions" in user
    assert "- What is it? Answer: <visual_answer>a cat</visual_answer>" in user
    assert "Caption: <image_caption>cap</image_caption>" in user and "Analysis: not enough" in user


def test_agents_run_sync_and_async() -> None:
    reply = json.dumps(
        {"sub_questions": ["What is it?"], "analysis": "a", "answer": "x", "confidence": 1}
    )
    llm = ScriptedChat(replies=[reply], cycle=True)
    questioner = build_questioner(llm, max_sub_questions=1)
    reasoner = build_reasoner(llm)
    inputs = {"question": "Q?", "caption": "cap"}
    assert questioner.invoke(inputs).value.sub_questions == ["What is it?"]
    assert asyncio.run(questioner.ainvoke(inputs)).value.sub_questions == ["What is it?"]
    r_inputs = {**inputs, "sub_answers": [], "final": True}
    assert asyncio.run(reasoner.ainvoke(r_inputs)).value.answer == "x"
    assert "you must give your best answer" in str(llm.calls[-1][0].content)


def test_bounded_repairs_raise_a_typed_error() -> None:
    llm = ScriptedChat(replies=["not json", "still not", "nope"])
    with pytest.raises(StructuredOutputError) as info:
        build_reasoner(llm, max_repairs=2).invoke(
            {"question": "Q?", "caption": "c", "sub_answers": []}
        )
    assert info.value.attempts == 3 and len(llm.calls) == 3


def test_questioner_drops_a_restated_main_question_when_others_remain() -> None:
    from mmagents.agents.questioner import SubQuestions, without_main_question
    from mmagents.models.structured import Structured

    asked = ["Is this animal someone's pet?", "Does it wear a collar?"]
    out = Structured(value=SubQuestions(sub_questions=asked), attempts=1, raw="")
    kept = without_main_question(out, "is this animal someone's pet")
    assert kept.value.sub_questions == ["Does it wear a collar?"] and kept.attempts == 1
    alone = Structured(value=SubQuestions(sub_questions=asked[:1]), attempts=1, raw="")
    assert without_main_question(alone, asked[0]).value.sub_questions == asked[:1]

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from mmagents.errors import StructuredOutputError
from mmagents.models.fake import ScriptedChat
from mmagents.models.structured import ainvoke_structured, invoke_structured, parse_json_object


class Verdict(BaseModel):
    answer: str
    confidence: float = Field(ge=0, le=1)


@pytest.mark.parametrize(
    "text",
    [
        '{"answer": "cat", "confidence": 0.9}',
        'Sure! Here it is:\n```json\n{"answer": "cat", "confidence": 0.9}\n```',
        'prefix {"answer": "cat", "confidence": 0.9,} suffix',
        '{"answer": "c\tat\n", "confidence": 0.9}',  # raw control characters in a string
        '{"note": "a } in a string", "answer": "cat", "confidence": 0.9}',
    ],
)
def test_parse_is_tolerant(text: str) -> None:
    assert parse_json_object(text)["confidence"] == 0.9


def test_parse_without_object_fails() -> None:
    with pytest.raises(ValueError, match="no JSON object"):
        parse_json_object("I think it's a cat")


def test_first_try_validates() -> None:
    llm = ScriptedChat(replies=['{"answer": "cat", "confidence": 0.8}'])
    result = invoke_structured(llm, Verdict, [HumanMessage("what?")])
    assert result.value == Verdict(answer="cat", confidence=0.8)
    assert result.attempts == 1
    # the schema reaches the model as an instruction (prompt mode)
    assert "confidence" in str(llm.calls[0][0].content)


def test_repair_shows_the_error_then_succeeds() -> None:
    llm = ScriptedChat(
        replies=['{"answer": "cat", "confidence": 7}', '{"answer": "cat", "confidence": 0.7}']
    )
    result = invoke_structured(llm, Verdict, [SystemMessage("be brief"), HumanMessage("what?")])
    assert result.attempts == 2
    repair_prompt = str(llm.calls[1][-1].content)
    assert "confidence" in repair_prompt and "invalid" in repair_prompt
    assert llm.calls[1][0].content.startswith("be brief")  # system prompt kept, schema appended


def test_gives_up_with_a_typed_error_after_bounded_repairs() -> None:
    llm = ScriptedChat(replies=["no json here"], cycle=True)
    with pytest.raises(StructuredOutputError) as info:
        invoke_structured(llm, Verdict, [HumanMessage("what?")], max_repairs=2)
    assert info.value.attempts == 3 and len(llm.calls) == 3
    assert info.value.schema_name == "Verdict"


def test_async_twin() -> None:
    llm = ScriptedChat(replies=["{}", '{"answer": "dog", "confidence": 0.1}'])
    result = asyncio.run(ainvoke_structured(llm, Verdict, [HumanMessage("what?")]))
    assert (result.value.answer, result.attempts) == ("dog", 2)


def test_the_schema_shown_to_a_model_has_no_docstrings_but_keeps_field_descriptions() -> None:
    # Small models copied the reasoner's docstring into its analysis.
    from mmagents.models.structured import _schema_instruction, prompt_schema

    class Inner(BaseModel):
        """Developer notes about Inner."""

        x: int = Field(description="what x is, for the model")

    class Outer(BaseModel):
        """Developer notes about Outer."""

        inner: Inner
        y: str

    shown = prompt_schema(Outer)
    assert "description" not in shown and "description" not in shown["$defs"]["Inner"]
    assert shown["$defs"]["Inner"]["properties"]["x"]["description"] == "what x is, for the model"
    assert "Developer notes" not in _schema_instruction(Outer)
    assert Outer.model_json_schema()["description"] == "Developer notes about Outer."  # untouched

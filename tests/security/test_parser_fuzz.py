"""Finding 5: the JSON parsers cannot crash or stall (deterministic fuzz, >= 1,000 inputs each)."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage
from pydantic import BaseModel

from mmagents.errors import StructuredOutputError
from mmagents.models._tool_grammar import decision_message
from mmagents.models.fake import ScriptedChat
from mmagents.models.structured import MAX_DEPTH, invoke_structured, parse_json_object

FUZZ = settings(
    max_examples=1000,
    derandomize=True,  # the same inputs on every run: a failure reproduces
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)
_noise = st.text(alphabet=string.printable + '{}[]"\\\u00e9\u2028', max_size=60)


@st.composite
def model_outputs(draw: st.DrawFn) -> str:
    """What a small model might write: JSON, broken JSON, prose, fences, deep nesting."""
    kind = draw(st.sampled_from(["json", "cut", "prose", "fence", "deep", "noise"]))
    body = json.dumps(draw(st.dictionaries(st.text(max_size=5), _json_values, max_size=4)))
    if kind == "json":
        return body
    if kind == "cut":
        return body[: draw(st.integers(0, len(body)))]
    if kind == "prose":
        return draw(_noise) + body + draw(_noise)
    if kind == "fence":
        return f"```json\n{body}\n```" + draw(_noise)
    if kind == "deep":
        depth = draw(st.integers(MAX_DEPTH - 2, 3000))
        opener = draw(st.sampled_from(['{"a":', "[", '{"a":[', "{"]))
        closer = "".join({"{": "}", "[": "]"}[c] for c in opener if c in "{[")[::-1]
        tail = closer * depth if draw(st.booleans()) else ""
        return opener * depth + "1" + tail
    return draw(_noise)


class Verdict(BaseModel):
    answer: str


@FUZZ
@given(model_outputs())
def test_parse_json_object_returns_a_dict_or_raises_value_error(text: str) -> None:
    try:
        value = parse_json_object(text)
    except ValueError:
        return
    assert isinstance(value, dict)


@FUZZ
@given(model_outputs())
def test_decision_message_always_returns_a_message(text: str) -> None:
    message = decision_message(text, ["caption"])
    assert isinstance(message, AIMessage)


@FUZZ
@given(model_outputs())
def test_invoke_structured_validates_or_raises_structured_output_error(text: str) -> None:
    llm = ScriptedChat(replies=[text], cycle=True)
    try:
        result = invoke_structured(llm, Verdict, [HumanMessage(content="q")], max_repairs=0)
    except StructuredOutputError:
        return
    assert isinstance(result.value, Verdict)


@pytest.mark.parametrize("opener", ['{"a":', "[", '{"a":['])
def test_output_nested_a_thousand_deep_is_a_structured_output_error(opener: str) -> None:
    deep = opener * 1000 + "1"
    with pytest.raises(ValueError, match="deeper than"):
        parse_json_object('{"answer": "x", "n": ' + deep + "}")
    llm = ScriptedChat(replies=['{"answer": ' + deep + "}"], cycle=True)
    with pytest.raises(StructuredOutputError):
        invoke_structured(llm, Verdict, [HumanMessage(content="q")], max_repairs=1)


def test_the_first_balanced_object_is_still_found() -> None:
    assert parse_json_object('I think {"answer": "a {b}"} and {"x": 1}') == {"answer": "a {b}"}
    assert parse_json_object('{"answer": {"x": 1}') == {"x": 1}
    assert parse_json_object('{"answer": "y",}') == {"answer": "y"}

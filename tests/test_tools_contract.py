"""One contract every role tool inherits (smolagents-style), run on the deterministic fake backends.

Each ``Test<Tool>`` subclass of :class:`ToolContract` names its tool, a valid input and some
invalid inputs; the contract checks the declaration (name, description, typed schema with image
handles), a real run with JSON-serialisable output, the typed error for an unknown handle, and
schema rejection of bad input. ``test_every_role_tool_has_a_contract`` keeps the list complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from langchain_core.tools import BaseTool
from PIL import Image
from pydantic import BaseModel, ValidationError

from mmagents import Config
from mmagents.errors import UnknownHandleError
from mmagents.images import HANDLE_PATTERN, default_store
from mmagents.tools import ROLE_TOOLS, build_tool

#: Stands for "a valid handle of an image in the store" in the inputs below.
IMAGE = "<image>"
UNKNOWN = "img_0000000000000000"


def _fill(inputs: dict[str, Any], handle: str) -> dict[str, Any]:
    return {key: handle if value == IMAGE else value for key, value in inputs.items()}


class ToolContract:
    """What every role tool must satisfy. Subclasses set the class attributes."""

    tool_name: ClassVar[str]
    valid_input: ClassVar[dict[str, Any]]
    invalid_inputs: ClassVar[list[dict[str, Any]]]
    #: Keys the output dict must have.
    output_keys: ClassVar[set[str]]

    @pytest.fixture
    def make_tool(self, fake_config: Config) -> Callable[[], BaseTool]:
        return lambda: build_tool(self.tool_name, fake_config)

    @pytest.fixture
    def handle(self, fake_config: Config) -> str:
        picture = Image.new("RGB", (96, 64), (30, 120, 200))
        return default_store(fake_config).put(picture)

    @property
    def image_args(self) -> list[str]:
        return [key for key, value in self.valid_input.items() if value == IMAGE]

    def test_declares_name_description_and_schema(self, make_tool: Callable[[], BaseTool]) -> None:
        tool = make_tool()
        assert tool.name == self.tool_name
        assert len(tool.description) > 10
        assert isinstance(tool.args_schema, type) and issubclass(tool.args_schema, BaseModel)
        properties = tool.args_schema.model_json_schema()["properties"]
        assert set(self.valid_input) <= set(properties)
        for name, spec in properties.items():
            assert spec.get("description"), f"argument {name!r} has no description"

    def test_image_arguments_are_handles(self, make_tool: Callable[[], BaseTool]) -> None:
        properties = make_tool().args_schema.model_json_schema()["properties"]  # type: ignore[union-attr]
        for name in self.image_args:
            assert properties[name]["type"] == "string"
            assert properties[name]["pattern"] == HANDLE_PATTERN.pattern

    def test_runs_and_returns_json(self, make_tool: Callable[[], BaseTool], handle: str) -> None:
        out = make_tool().invoke(_fill(self.valid_input, handle))
        assert isinstance(out, dict)
        assert self.output_keys <= set(out)
        assert json.loads(json.dumps(out)) == out  # plain JSON types only, no numpy or tuples

    def test_unknown_handle_raises_typed_error(self, make_tool: Callable[[], BaseTool]) -> None:
        if not self.image_args:
            pytest.skip(f"{self.tool_name} takes no image")
        with pytest.raises(UnknownHandleError):
            make_tool().invoke(_fill(self.valid_input, UNKNOWN))

    def test_invalid_input_is_rejected_by_the_schema(
        self, make_tool: Callable[[], BaseTool], handle: str
    ) -> None:
        tool = make_tool()
        for bad in [{}, {**self.valid_input, "unexpected": 1}, *self.invalid_inputs]:
            with pytest.raises(ValidationError):
                tool.invoke(_fill(bad, handle))


class TestCaptionTool(ToolContract):
    tool_name = "caption"
    valid_input: ClassVar[dict[str, Any]] = {"image": IMAGE}
    invalid_inputs: ClassVar[list[dict[str, Any]]] = [{"image": "cat.png"}, {"image": 3}]
    output_keys: ClassVar[set[str]] = {"caption"}


class TestAnswerQuestionTool(ToolContract):
    tool_name = "answer_question"
    valid_input: ClassVar[dict[str, Any]] = {"image": IMAGE, "question": "What is it?"}
    invalid_inputs: ClassVar[list[dict[str, Any]]] = [
        {"image": IMAGE, "question": ""},
        {"image": IMAGE},
    ]
    output_keys: ClassVar[set[str]] = {"answer"}


class TestScoreImageTextTool(ToolContract):
    tool_name = "score_image_text"
    valid_input: ClassVar[dict[str, Any]] = {"image": IMAGE, "texts": ["a cat", "a car", "a cat"]}
    invalid_inputs: ClassVar[list[dict[str, Any]]] = [
        {"image": IMAGE, "texts": []},
        {"image": IMAGE, "texts": [""]},
        {"image": IMAGE, "texts": "a cat"},
    ]
    output_keys: ClassVar[set[str]] = {"scores", "best"}

    def test_one_score_per_text_in_order(
        self, make_tool: Callable[[], BaseTool], handle: str
    ) -> None:
        out = make_tool().invoke(_fill(self.valid_input, handle))
        assert [row["text"] for row in out["scores"]] == ["a cat", "a car", "a cat"]
        assert out["scores"][0]["score"] == out["scores"][2]["score"]
        assert out["best"] == max(out["scores"], key=lambda r: r["score"])["text"]


class TestReadTextTool(ToolContract):
    tool_name = "read_text"
    valid_input: ClassVar[dict[str, Any]] = {"image": IMAGE}
    invalid_inputs: ClassVar[list[dict[str, Any]]] = [{"image": "img_XYZ"}]
    output_keys: ClassVar[set[str]] = {"text", "lines"}


class TestCropRegionTool(ToolContract):
    tool_name = "crop_region"
    valid_input: ClassVar[dict[str, Any]] = {"image": IMAGE, "box": [10, 5, 50, 45]}
    invalid_inputs: ClassVar[list[dict[str, Any]]] = [
        {"image": IMAGE, "box": [0, 0, 10]},
        {"image": IMAGE, "box": [0, 0, 10, 10, 20]},
        {"image": IMAGE, "box": [0, 0, float("nan"), 10]},
    ]
    output_keys: ClassVar[set[str]] = {"image", "box", "size"}

    def test_crop_is_a_new_handle_of_the_region(
        self, make_tool: Callable[[], BaseTool], handle: str, fake_config: Config
    ) -> None:
        out = make_tool().invoke({"image": handle, "box": [10, 5, 50, 45]})
        assert out["image"] != handle
        assert default_store(fake_config).get(out["image"]).size == (40, 40)


class TestGenerateImageTool(ToolContract):
    tool_name = "generate_image"
    valid_input: ClassVar[dict[str, Any]] = {"prompt": "a red square", "n": 2}
    invalid_inputs: ClassVar[list[dict[str, Any]]] = [
        {"prompt": ""},
        {"prompt": "x", "n": 0},
        {"prompt": "x", "n": 99},
    ]
    output_keys: ClassVar[set[str]] = {"images"}

    def test_results_carry_provenance_and_handles(
        self, make_tool: Callable[[], BaseTool], fake_config: Config
    ) -> None:
        out = make_tool().invoke(self.valid_input)
        assert len(out["images"]) == 2
        for item in out["images"]:
            assert item["provenance"] == "fake"  # the fake backend never claims "generated"
            assert item["image"] in default_store(fake_config)


class TestEmbedTool(ToolContract):
    tool_name = "embed"
    valid_input: ClassVar[dict[str, Any]] = {"texts": ["a cat", "a dog"]}
    invalid_inputs: ClassVar[list[dict[str, Any]]] = [{"texts": []}, {"texts": [""]}]
    output_keys: ClassVar[set[str]] = {"dimensions", "embeddings"}


def test_every_role_tool_has_a_contract() -> None:
    covered = {cls.tool_name for cls in ToolContract.__subclasses__()}
    assert covered == set(ROLE_TOOLS)

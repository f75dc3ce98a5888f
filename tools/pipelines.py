"""The pipeline graphs as LangChain tools, so the chat agent can run a whole pipeline in one call.

Each tool calls its graph through the graph's evaluation-runner function (the fixed
``eval_<task>_sample(sample, config, **options)`` contract), importing the graph module only when
called. A build without that graph module still works: :meth:`PipelineTool.unavailable_reason`
says why the tool is left out, and a call raises :class:`~mmagents.errors.BackendUnavailableError`.

Options a runner takes come from the config section ``[tools.<tool name>]``, e.g.::

    [tools.classify_image]
    descriptors = "/path/to/descriptors.json"   # published descriptors instead of LLM-written ones
"""

from __future__ import annotations

import importlib.util
from typing import Any

from pydantic import BaseModel, Field

from mmagents._registry import import_string
from mmagents.errors import BackendUnavailableError
from mmagents.tools._base import MMTool, image_field

__all__ = ["ClassifyImageTool", "ClassifyMemeTool", "PipelineTool", "RunIdealGPTTool"]


class VQAInput(BaseModel):
    image: str = image_field()
    question: str = Field(description="The question about the image.", min_length=1)
    choices: list[str] | None = Field(
        default=None, description="Answer candidates for a multiple-choice question, if any."
    )


class MemeInput(BaseModel):
    image: str = image_field("Handle of the meme image.")
    text: str | None = Field(
        default=None, description="The meme's text if already known (otherwise read by OCR)."
    )


class ClassesInput(BaseModel):
    image: str = image_field()
    classes: list[str] = Field(description="Candidate class names.", min_length=2)


class PipelineTool(MMTool):
    """A pipeline graph run through its evaluation runner ``"module:function"``."""

    runner: str = ""

    @property
    def module_name(self) -> str:
        """The graph module this tool imports on call."""
        return self.runner.partition(":")[0]

    def unavailable_reason(self) -> str | None:
        """Why this tool cannot run in this build (its graph module is absent), else ``None``."""
        try:
            found = importlib.util.find_spec(self.module_name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"pipeline module {self.module_name} is not part of this installation"
        return None

    def _run(self, **kwargs: Any) -> dict[str, Any]:
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(f"tool {self.name!r} cannot run: {reason}")
        run = import_string(self.runner)
        sample = {"id": f"chat-{self.name}", **{k: v for k, v in kwargs.items() if v is not None}}
        options = dict(self.config.section(f"tools.{self.name}"))
        result: dict[str, Any] = run(sample, self.config, **options)  # type: ignore[operator]
        return result


class RunIdealGPTTool(PipelineTool):
    name: str = "run_idealgpt"
    description: str = (
        "Answer a hard question about an image with the IdealGPT pipeline (it asks itself "
        "sub-questions about the image, then reasons). Slower than answer_question."
    )
    args_schema: type[BaseModel] = VQAInput
    runner: str = "mmagents.graphs.idealgpt:eval_vqa_sample"


class ClassifyMemeTool(PipelineTool):
    name: str = "classify_meme"
    description: str = "Decide whether a meme is harmful, with a rationale (meme pipeline)."
    args_schema: type[BaseModel] = MemeInput
    runner: str = "mmagents.graphs.meme:eval_meme_sample"


class ClassifyImageTool(PipelineTool):
    name: str = "classify_image"
    description: str = (
        "Pick which of the given classes an image shows, explained by visual descriptors."
    )
    args_schema: type[BaseModel] = ClassesInput
    runner: str = "mmagents.graphs.describe:eval_classify_sample"

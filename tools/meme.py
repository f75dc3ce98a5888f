"""``classify_meme``: a trained meme student as a LangChain tool (no LLM involved).

The tool takes a meme as an image handle (its text read by OCR, its image captioned by the vlm
role) or as text + caption, runs the meme pipeline in ``mode=classify`` with the student folder
named in ``[graphs.meme] model`` (or in the chat agent's
``[graphs.chat.tool_options.classify_meme] model``), and returns the label, the probability of
that label, ``p_harmful``, the dataset the student was trained on (``dataset``; ``None`` for a
student trained before it was recorded) and, for a generative student, its own rationale. With a
``dataset`` argument the tool asks that dataset's student
(:func:`~mmagents.models.memes.registry.resolve_student`).

Like every pipeline tool it reaches the graph through the table of pipelines
(:class:`~mmagents.tools.pipelines.GraphTool`), never by importing a graph module: tools sit
below the graphs.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from mmagents.errors import ConfigError
from mmagents.models.memes.registry import dataset_of, resolve_student
from mmagents.tools.pipelines import GraphTool

__all__ = ["ClassifyMemeTool", "MemeInput"]


class MemeInput(BaseModel):
    """A meme: an image handle, or its text (and caption), or both."""

    image: str | None = Field(
        default=None,
        description="Handle of the meme image (img_...); its text and caption are read from it.",
        pattern=r"^img_[0-9a-f]{16}$",
    )
    text: str | None = Field(default=None, description="The text written on the meme, if known.")
    caption: str | None = Field(default=None, description="A description of the meme's image.")
    dataset: str | None = Field(
        default=None,
        description="Which dataset's student to ask (e.g. harmc, harmp, fhm); default: the "
        "configured student.",
        pattern=r"^[A-Za-z0-9_-]+$",
    )

    @model_validator(mode="after")
    def _needs_content(self) -> MemeInput:
        if self.image is None and self.text is None:
            raise ValueError("give the meme's image handle or its text")
        return self


class ClassifyMemeTool(GraphTool):
    """Harmful-meme classification by the trained student of ``[graphs.meme] model``."""

    name: str = "classify_meme"
    description: str = (
        "Decide whether a meme is harmful or harmless with the finetuned meme student: returns "
        "the label, its probability, the dataset the student was trained on and (generative "
        "student) a rationale. Give the image handle, or the meme's text and a caption of its "
        "image; optionally the dataset whose student to ask (harmc, harmp, fhm)."
    )
    pipeline: str = "meme"
    role_name: str = ""

    def __init__(self, **kwargs: Any) -> None:
        # The tool's own arguments: the pipeline's input less the teacher's gold label.
        kwargs.setdefault("args_schema", MemeInput)
        super().__init__(**kwargs)

    def _run(
        self,
        image: str | None = None,
        text: str | None = None,
        caption: str | None = None,
        dataset: str | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        pipeline = self._table()
        options = dict(self.config.section(f"tools.{self.name}"))
        students = options.pop("students", None) or {}
        # The chat agent's per-tool options may name the student too.
        chat_options = self.config.section(f"graphs.chat.tool_options.{self.name}")
        if dataset:
            # One student per dataset: [tools.classify_meme.students] NAME = DIR, or the
            # folder registered by `mmagents finetune meme --register` (<home>/students/NAME).
            model = str(resolve_student(dataset, students, self.config.home))
        else:
            model = str(pipeline.settings_for(self.config, options).model)
            model = model or str(chat_options.get("model") or "")
        if not model:
            raise ConfigError(
                "classify_meme needs a trained student: set [graphs.meme] model = DIR "
                "(train one with `mmagents finetune meme`)"
            )
        run = {**options, "model": model, "mode": "classify"}
        graph, _ = self._ready(run)
        # The graph is built once; each call's settings (its student) travel as the run context.
        settings = pipeline.settings_for(self.config, run)
        given = {"image": image, "text": text, "caption": caption}
        inputs = pipeline.inputs({k: v for k, v in given.items() if v is not None})
        out = graph.invoke(inputs, context=settings)
        return {
            "dataset": dataset_of(model),
            "label": out["prediction"],
            "probability": round(float(out["probability"]), 4),
            "p_harmful": round(float(out["p_harmful"]), 4),
            "rationale": out.get("rationale"),
            "text": out.get("text", ""),
            "caption": out.get("caption", ""),
        }

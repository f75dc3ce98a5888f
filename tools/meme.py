"""``classify_meme``: a trained meme student as a LangChain tool (no LLM involved).

The tool takes a meme as an image handle (its text read by OCR, its image captioned by the vlm
role) or as text + caption, runs the student folder named in ``[graphs.meme] model`` (or in the
chat agent's ``[graphs.chat.tool_options.classify_meme] model``) through the meme graph, and
returns the label, the probability of that label, ``p_harmful`` and, for a generative student,
the student's own rationale.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from mmagents.errors import ConfigError
from mmagents.tools._base import MMTool

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

    @model_validator(mode="after")
    def _needs_content(self) -> MemeInput:
        if self.image is None and self.text is None:
            raise ValueError("give the meme's image handle or its text")
        return self


class ClassifyMemeTool(MMTool):
    """Harmful-meme classification by the trained student of ``[graphs.meme] model``."""

    name: str = "classify_meme"
    description: str = (
        "Decide whether a meme is harmful or harmless with the finetuned meme student: returns "
        "the label, its probability and (generative student) a rationale. Give the image handle, "
        "or the meme's text and a caption of its image."
    )
    args_schema: type[BaseModel] = MemeInput
    role_name: str = ""

    def _run(
        self,
        image: str | None = None,
        text: str | None = None,
        caption: str | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        from mmagents.graphs._settings import resolve_settings
        from mmagents.graphs.meme import MemeSettings, run_meme

        settings = resolve_settings(MemeSettings, self.config)
        # The chat agent's per-tool options may name the student too (tools/pipelines.py).
        chat_options = self.config.section(f"graphs.chat.tool_options.{self.name}")
        model = settings.model or str(chat_options.get("model") or "")
        if not model:
            raise ConfigError(
                "classify_meme needs a trained student: set [graphs.meme] model = DIR "
                "(train one with `mmagents finetune meme`)"
            )
        out = run_meme(self.config, image=image, text=text, caption=caption, model=model)
        return {
            "label": out["prediction"],
            "probability": round(float(out["probability"]), 4),
            "p_harmful": round(float(out["p_harmful"]), 4),
            "rationale": out.get("rationale"),
            "text": out.get("text", ""),
            "caption": out.get("caption", ""),
        }

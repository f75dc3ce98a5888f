"""One LangChain tool per role capability, each taking image handles.

``caption`` · ``answer_question`` · ``score_image_text`` · ``read_text`` · ``crop_region`` ·
``generate_image`` · ``embed``. Each returns a JSON-serialisable dict; errors are typed exceptions
(e.g. :class:`~mmagents.errors.UnknownHandleError`) that an agent's tool node turns into tool
messages.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

from mmagents.errors import ImageError
from mmagents.models.base import working_side
from mmagents.tools._base import MMTool, image_field

__all__ = [
    "AnswerQuestionTool",
    "CaptionTool",
    "CropRegionTool",
    "EmbedTool",
    "GenerateImageTool",
    "ReadTextTool",
    "ScoreImageTextTool",
]


#: A non-empty text item (an empty string is a caller mistake, not something to score or embed).
Text = Annotated[str, Field(min_length=1)]


class _Input(BaseModel):
    # Unknown keys are rejected rather than silently ignored: a misspelt argument is an error the
    # calling agent should see.
    model_config = ConfigDict(extra="forbid")


class ImageInput(_Input):
    image: str = image_field()


class QuestionInput(_Input):
    image: str = image_field()
    question: str = Field(description="A question about the image.", min_length=1)


class ScoreInput(_Input):
    image: str = image_field()
    texts: list[Text] = Field(
        description="Candidate descriptions to rate.", min_length=1, max_length=256
    )


class CropInput(_Input):
    image: str = image_field()
    box: list[FiniteFloat] = Field(
        description="Region as [x1, y1, x2, y2] in pixels.", min_length=4, max_length=4
    )


class PromptInput(_Input):
    prompt: str = Field(description="What the image should show.", min_length=1)
    n: int = Field(default=1, ge=1, le=8, description="How many candidates.")


class TextsInput(_Input):
    texts: list[Text] = Field(description="Texts to embed.", min_length=1, max_length=256)


class CaptionTool(MMTool):
    name: str = "caption"
    description: str = "Describe an image in one sentence."
    args_schema: type[BaseModel] = ImageInput
    role_name: str = "vlm"

    def _run(self, image: str, **_: Any) -> dict[str, Any]:
        backend = self.backend()
        picture = self.store.get(image, min_side=working_side(backend))
        return {"caption": backend.caption(picture)}


class AnswerQuestionTool(MMTool):
    name: str = "answer_question"
    description: str = "Answer a short question about an image."
    args_schema: type[BaseModel] = QuestionInput
    role_name: str = "vlm"

    def _run(self, image: str, question: str, **_: Any) -> dict[str, Any]:
        backend = self.backend()
        picture = self.store.get(image, min_side=working_side(backend))
        return {"answer": backend.answer(picture, question)}


class ScoreImageTextTool(MMTool):
    name: str = "score_image_text"
    description: str = "Rate how well each text describes an image (higher is better)."
    args_schema: type[BaseModel] = ScoreInput
    role_name: str = "scorer"

    def _run(self, image: str, texts: list[str], **_: Any) -> dict[str, Any]:
        backend = self.backend()
        scores = backend.score([self.store.get(image, min_side=working_side(backend))], texts)[0]
        # A list, not a dict keyed by text: repeated texts keep one score each, in input order.
        rated: list[dict[str, Any]] = [
            {"text": text, "score": round(float(s), 4)}
            for text, s in zip(texts, scores, strict=True)
        ]
        return {"scores": rated, "best": max(rated, key=lambda r: r["score"])["text"]}


class ReadTextTool(MMTool):
    name: str = "read_text"
    description: str = "Read the text written in an image (OCR), line by line."
    args_schema: type[BaseModel] = ImageInput
    role_name: str = "ocr"

    def _run(self, image: str, **_: Any) -> dict[str, Any]:
        lines = self.backend().read(self.store.get(image))
        return {
            "text": "\n".join(line.text for line in lines),
            "lines": [
                {
                    "text": ln.text,
                    "confidence": round(float(ln.confidence), 3),
                    "box": [[float(x), float(y)] for x, y in ln.box],
                }
                for ln in lines
            ],
        }


class CropRegionTool(MMTool):
    name: str = "crop_region"
    description: str = "Crop a region of an image; returns the handle of the cropped image."
    args_schema: type[BaseModel] = CropInput
    role_name: str = ""

    def _run(self, image: str, box: list[float], **_: Any) -> dict[str, Any]:
        picture = self.store.get(image)
        x1, y1, x2, y2 = (round(v) for v in box)
        x1, y1 = max(0, x1), max(0, y1)
        x2, y2 = min(picture.width, x2), min(picture.height, y2)
        if x2 <= x1 or y2 <= y1:
            raise ImageError(f"empty crop box {box} for a {picture.width}x{picture.height} image")
        handle = self.store.put(picture.crop((x1, y1, x2, y2)))
        return {"image": handle, "box": [x1, y1, x2, y2], "size": [x2 - x1, y2 - y1]}


class GenerateImageTool(MMTool):
    name: str = "generate_image"
    description: str = (
        "Make images for a prompt with the imagegen role. Each result says whether it was "
        "generated or retrieved (the offline gallery backend retrieves existing photos)."
    )
    args_schema: type[BaseModel] = PromptInput
    role_name: str = "imagegen"

    def _run(self, prompt: str, n: int = 1, **_: Any) -> dict[str, Any]:
        results = self.backend().generate(prompt, n)
        return {
            "images": [
                {
                    "image": self.store.put(r.image),
                    "provenance": r.provenance,
                    "source": r.source,
                }
                for r in results
            ]
        }


class EmbedTool(MMTool):
    name: str = "embed"
    description: str = "Embed texts as vectors (L2-normalised sentence embeddings)."
    args_schema: type[BaseModel] = TextsInput
    role_name: str = "embed"

    def _run(self, texts: list[str], **_: Any) -> dict[str, Any]:
        vectors = self.backend().embed(texts)
        # float64 before rounding, so the JSON shows 0.14113 rather than 0.1411300003528595.
        rounded = np.round(np.asarray(vectors, dtype=np.float64), 5)
        return {"dimensions": int(rounded.shape[1]), "embeddings": rounded.tolist()}

"""Baseline runners: the floors that the pipelines and finetuned students must beat.

``vqa_single_shot`` asks the answerer VLM alone, once (IdealGPT's single-shot row).
``meme_zero_shot`` asks the llm role, zero-shot, whether a meme is harmful, from its OCR text and
image caption, with a structured answer (label + confidence). It is the comparison point for the
distilled Mr.Harm student (task ``meme-harmful-zero-shot`` always runs it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from mmagents._config import Config
from mmagents.agents._untrusted import untrusted
from mmagents.agents.reasoner import match_choice
from mmagents.errors import ConfigError
from mmagents.runtime import Models

__all__ = ["MemeVerdict", "meme_zero_shot", "meme_zero_shot_messages", "vqa_single_shot"]

# The tags that delimit untrusted meme data in prompts/meme_zero_shot.yaml: stripped from the data
# so a meme cannot close its own block and talk to the model as the instructions.
#: The prompt's delimiting tags, removed from the data so a meme cannot close its block early.
_TAGS = ("meme_text", "image_caption")


class MemeVerdict(BaseModel):
    """The zero-shot moderator's answer."""

    label: Literal["harmful", "harmless"] = Field(description="harmful or harmless")
    confidence: float = Field(ge=0.0, le=1.0, description="probability that the label is correct")


def meme_zero_shot_messages(text: str, caption: str) -> list[Any]:
    """The chat messages for one meme (prompt ``meme_zero_shot``, variant ``default``)."""
    from mmagents.prompts import render_messages

    return render_messages(
        "meme_zero_shot", "default", text=untrusted(text, _TAGS), caption=untrusted(caption, _TAGS)
    )


def meme_zero_shot(
    sample: dict[str, Any],
    config: Config | None = None,
    *,
    models: Models | None = None,
    settings: Mapping[str, Any] | None = None,
    model: str | None = None,
    max_repairs: int = 2,
) -> dict[str, Any]:
    """Classify one meme zero-shot with the llm role.

    The harness calls it with the run's runtime (``models=``, cached as that run asked); a Python
    caller may pass only ``config`` (then a runtime of its own is made for the call).

    Args:
        sample: A record with ``text`` (OCR text) and ``caption`` (image caption).
        config: Selects the llm backend when no ``models`` is given.
        models: The run's runtime (its llm answers).
        settings: The run's options (``model``, ``max_repairs``; nothing else).
        model: A finetuned student folder (``--model DIR``): not supported by the zero-shot
            baseline, which only ever asks the configured llm.
        max_repairs: Repair attempts when the answer does not validate.

    Returns:
        ``{"prediction": "harmful"|"harmless", "confidence": float, "llm_calls": int}``.

    Raises:
        ConfigError: ``model`` was given, or an unknown setting.
        StructuredOutputError: no valid answer after the repairs.
    """
    from mmagents.models.structured import invoke_structured

    options = dict(settings or {})
    unknown = sorted(set(options) - {"model", "max_repairs"})
    if unknown:
        raise ConfigError(f"the zero-shot meme baseline has no option(s) {unknown}")
    model = options.get("model", model)
    max_repairs = int(options.get("max_repairs", max_repairs))
    if model is not None:
        raise ConfigError(
            "the zero-shot meme baseline has no student model: a student runs in task "
            "meme-harmful (pipeline meme, --model DIR)"
        )
    llm = (models or Models(config)).llm
    messages = meme_zero_shot_messages(sample.get("text", ""), sample.get("caption", ""))
    result = invoke_structured(llm, MemeVerdict, messages, max_repairs=max_repairs)
    return {
        "prediction": result.value.label,
        "confidence": result.value.confidence,
        "llm_calls": result.attempts,
    }


def vqa_single_shot(
    sample: dict[str, Any], *, models: Models, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """IdealGPT's single-shot baseline: the answerer VLM alone, one call (task ``vqa-single-shot``).

    With ``choices`` the question lists them and the reply is mapped onto one (``None`` when it
    names none).

    Returns:
        ``prediction``, ``raw`` (the VLM's one-line reply), ``rounds`` (0), ``llm_calls`` (0),
        ``vlm_calls`` (1).

    Raises:
        ConfigError: any option (the baseline has none).
    """
    if settings:
        raise ConfigError(f"the single-shot baseline takes no settings, got {sorted(settings)}")
    image = models.store.resolve(sample["image"])
    choices = [str(c) for c in sample.get("choices") or []]
    question = sample["question"]
    if choices:
        question = f"{question} Choose one of: {'; '.join(choices)}."
    raw = " ".join(str(models.vlm.answer(image, question)).split())
    prediction = match_choice(raw, choices) if choices else (raw or None)
    return {"prediction": prediction, "raw": raw, "rounds": 0, "llm_calls": 0, "vlm_calls": 1}

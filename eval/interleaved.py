"""Glue of the ``interleaved`` task: it composes two pipelines, ``comm`` then ``comm-filter``.

In the default ``continue`` mode the first ``k`` steps of a sample (text and images) are given to
the ``comm`` graph, which writes and illustrates the rest up to the sample's length (or
``steps``); the finished document is then scored by the ``comm-filter`` graph. ``mode=score``
scores the sample as it is. Judge scores and scorer metrics are reported as separate fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmagents._config import Config
from mmagents.agents.coherence_judge import CRITERIA
from mmagents.errors import ConfigError
from mmagents.graphs._comm_doc import DocStep, InterleavedDocument
from mmagents.graphs._settings import resolve_settings
from mmagents.graphs.comm import CommInput, CommSettings, build_comm_graph
from mmagents.graphs.comm_filter import (
    CommFilterInput,
    CommFilterSettings,
    build_comm_filter_graph,
)
from mmagents.runtime import Models

__all__ = ["eval_interleaved_sample"]

_MODES = ("continue", "score")
#: The task's own options; every other one is a setting of the comm and/or comm-filter graph
#: (``min_alignment`` and ``min_consistency`` go to both: they measure the same thing).
_OWN = ("mode", "k", "steps")


def _int_option(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {key}={value!r} is not a valid int") from None


def _split(config: Config, options: Mapping[str, Any]) -> tuple[CommSettings, CommFilterSettings]:
    """The run's settings of each graph: defaults < config sections < the task's options.

    Raises:
        ConfigError: an option that is neither the task's nor a setting of either graph.
    """
    comm, judge = CommSettings.model_fields, CommFilterSettings.model_fields
    unknown = sorted(set(options) - set(_OWN) - set(comm) - set(judge))
    if unknown:
        known = sorted({*_OWN, *comm, *judge})
        raise ConfigError(f"unknown option(s) {unknown} for task interleaved; known: {known}")
    return (
        resolve_settings(CommSettings, config, {k: v for k, v in options.items() if k in comm}),
        resolve_settings(
            CommFilterSettings, config, {k: v for k, v in options.items() if k in judge}
        ),
    )


def eval_interleaved_sample(
    sample: dict[str, Any], *, models: Models, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Harness runner of the ``interleaved`` task.

    Args:
        sample: ``steps`` (``[{title?, text, image?}]``, image paths already resolved by the
            harness) and optionally ``topic``.
        models: The run's runtime (its backends go through the run's call cache).
        settings: ``mode`` (``continue`` | ``score``), ``k`` (given steps, default 2, at most all
            but one), ``steps`` (finished length), and any setting of the ``comm`` graph
            (generation) or the ``comm-filter`` graph (thresholds).

    Returns:
        ``prediction`` (``keep`` | ``drop``); the LLM-judge scores ``coherence`` and
        ``judge_<criterion>``; the scorer metrics ``alignment`` and ``consistency``; and counts
        (``given_steps``, ``generated_steps``, ``image_attempts``, ``steps_below_threshold``,
        ``llm_calls``). ``generated`` lists the written steps (text and image provenance).

    Raises:
        ConfigError: a bad mode, option or sample.
    """
    mode = str(settings.get("mode", "continue"))
    if mode not in _MODES:
        raise ConfigError(f"mode must be one of {_MODES}, got {mode!r}")
    comm_settings, filter_settings = _split(models.config, settings)
    steps = sample.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ConfigError("an interleaved sample needs a non-empty 'steps' list")
    given = [DocStep.from_dict(s) for s in steps]
    for step in given:  # the harness resolved image paths; the graphs take handles
        step.image = models.store.put(step.image) if step.image else None
    topic = str(sample.get("topic") or "")
    if mode == "score":
        doc = InterleavedDocument(topic, given)
        k = len(given)
    else:
        k = max(1, min(_int_option(settings, "k", 2), len(given) - 1))
        total = _int_option(settings, "steps", len(given))
        inputs = CommInput(topic=topic, total_steps=max(total, k), steps=given[:k])
        graph = build_comm_graph(models=models, settings=comm_settings)
        doc = InterleavedDocument.from_output(graph.invoke(inputs.model_dump()))
    scored = CommFilterInput(topic=doc.topic, steps=doc.steps).model_dump()
    result = build_comm_filter_graph(models=models, settings=filter_settings).invoke(scored)
    return _record(doc, result, given=k)


def _record(doc: InterleavedDocument, result: Mapping[str, Any], *, given: int) -> dict[str, Any]:
    """The harness record: judge scores and scorer metrics as separate fields."""
    judge = result["judge"]
    written = [s for s in doc.steps if s.origin == "planned"]
    return {
        "prediction": result["decision"],
        "coherence": judge["coherence"],
        **{f"judge_{c}": judge[c] for c in CRITERIA},
        "alignment": result["image_text_alignment"],
        "consistency": result["image_sequence_consistency"],
        "given_steps": given,
        "generated_steps": len(written),
        "image_attempts": sum(s.attempts for s in doc.steps),
        "steps_below_threshold": sum(1 for s in doc.steps if s.passed is False),
        "llm_calls": int(doc.meta.get("llm_calls", 0)) + int(result["llm_calls"]),
        "generated": [
            {"title": s.title, "text": s.text, "provenance": s.provenance, "source": s.source}
            for s in written
        ],
    }

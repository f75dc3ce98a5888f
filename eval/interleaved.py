"""Glue of the ``interleaved`` task: it composes two pipelines, ``comm`` then ``comm-filter``.

In the default ``continue`` mode the first ``k`` steps of a sample (text and images) are given to
the ``comm`` graph, which writes and illustrates the rest up to the sample's length (or
``steps``); the finished document is then scored by the ``comm-filter`` graph. ``mode=score``
scores the sample as it is. Judge scores and scorer metrics are reported as separate fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmagents._config import Config, RoleConfig
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
from mmagents.models import BACKEND_WRAPPERS
from mmagents.runtime import Models

__all__ = ["eval_interleaved_sample"]

_MODES = ("continue", "score")
#: Options passed on to the generation loop's settings; the thresholds go to both graphs (they
#: measure alignment and consistency the same way).
_COMM_KEYS = ("max_retries", "candidates", "min_alignment", "min_consistency")
_FILTER_KEYS = ("min_coherence", "min_alignment", "min_consistency")


def _installed_wrappers(role: str, spec: RoleConfig, backend: Any) -> Any:
    """The harness's call-cache wrappers installed for this run (``eval.cache.installed``).

    Until the harness hands its runners a ``Models`` with the run's cache (contract step 3),
    this keeps the old-style runner's calls going through exactly the cache the run asked for.
    """
    for wrapper in BACKEND_WRAPPERS:
        backend = wrapper(role, spec, backend)
    return backend


def _int_option(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {key}={value!r} is not a valid int") from None


def eval_interleaved_sample(
    sample: dict[str, Any], config: Config, **options: Any
) -> dict[str, Any]:
    """Harness runner of the ``interleaved`` task.

    Args:
        sample: ``steps`` (``[{title?, text, image?}]``, image paths already resolved by the
            harness) and optionally ``topic``.
        config: The run's configuration.
        **options: ``mode`` (``continue`` | ``score``), ``k`` (given steps, default 2, at most
            all but one), ``steps`` (finished length), ``max_retries``, ``candidates``
            (generation), ``min_coherence`` (filter) and ``min_alignment``, ``min_consistency``
            (both).

    Returns:
        ``prediction`` (``keep`` | ``drop``); the LLM-judge scores ``coherence`` and
        ``judge_<criterion>``; the scorer metrics ``alignment`` and ``consistency``; and counts
        (``given_steps``, ``generated_steps``, ``image_attempts``, ``steps_below_threshold``,
        ``llm_calls``). ``generated`` lists the written steps (text and image provenance).

    Raises:
        ConfigError: a bad mode, option or sample.
    """
    mode = str(options.get("mode", "continue"))
    if mode not in _MODES:
        raise ConfigError(f"mode must be one of {_MODES}, got {mode!r}")
    steps = sample.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ConfigError("an interleaved sample needs a non-empty 'steps' list")
    models = Models(config, wrap=_installed_wrappers)
    given = [DocStep.from_dict(s) for s in steps]
    for step in given:  # the harness resolved image paths; the graphs take handles
        step.image = models.store.put(step.image) if step.image else None
    topic = str(sample.get("topic") or "")
    filter_settings = resolve_settings(
        CommFilterSettings, config, {k: options.get(k) for k in _FILTER_KEYS}
    )
    if mode == "score":
        doc = InterleavedDocument(topic, given)
        k = len(given)
    else:
        k = max(1, min(_int_option(options, "k", 2), len(given) - 1))
        total = _int_option(options, "steps", len(given))
        comm_settings = resolve_settings(
            CommSettings, config, {key: options.get(key) for key in _COMM_KEYS}
        )
        inputs = CommInput(topic=topic, total_steps=max(total, k), steps=given[:k])
        out = build_comm_graph(models=models).invoke(inputs.model_dump(), context=comm_settings)
        doc = InterleavedDocument.from_output(out)
    scored = CommFilterInput(topic=doc.topic, steps=doc.steps).model_dump()
    result = build_comm_filter_graph(models=models).invoke(scored, context=filter_settings)
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

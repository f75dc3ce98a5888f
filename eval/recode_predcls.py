"""Glue of the ``recode-predcls`` task: one VG150 / GQA200 image through the ``recode`` graph.

PredCls gives the boxes and labels; every ordered pair of objects is a candidate relation. Each
pair runs through the ``recode`` graph with the record's evaluated predicates as candidates; its
scores become a vector over all predicate ids (0 = background; predicates not scored, or
filtered, score 0, as in the reference). Under ``protocol=paper`` pairs are ranked by the softmax
of that vector (RECODE's ``PostProcessor``); under the default protocol by the raw best score.
The record's ``prediction`` is the graph-constrained ranked list ``[subject, object, predicate,
score]`` (one predicate per pair, best pair first); the metrics (:func:`predcls_recall`,
:func:`predcls_mean_recall`) match it to the ground truth as ``sgg_eval.py`` does
(:mod:`mmagents.eval.sgg`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmagents.errors import ConfigError
from mmagents.eval.sgg import PredClsImage, predcls_metrics
from mmagents.graphs import get_pipeline
from mmagents.graphs._recode_paper import GQA200_SEMANTIC, VG150_SEMANTIC, pair_rank_score
from mmagents.runtime import Models

__all__ = ["eval_predcls_sample", "predcls_mean_recall", "predcls_recall"]

_CLASSES = {"vg150": VG150_SEMANTIC, "gqa200": GQA200_SEMANTIC}


def _pair_vector(output: Mapping[str, Any], ids: Mapping[str, int], size: int) -> np.ndarray:
    vector = np.zeros(size, dtype=np.float64)
    for entry in output.get("ranking") or []:
        vector[ids[entry["predicate"]]] = float(entry["score"])
    return vector  # filtered predicates keep 0 (clip.py:244-246, :388)


def eval_predcls_sample(
    sample: dict[str, Any], *, models: Models, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Score every ordered object pair of one image and rank the pairs (graph constraint).

    Args:
        sample: A converted VG150 / GQA200 record (``image``, ``objects``, ``relations``,
            ``predicates`` id → name, ``num_classes``).
        models: The run's runtime.
        settings: ``recode`` settings (``protocol=paper`` …).

    Returns:
        ``prediction`` (ranked ``[s, o, predicate, score]``), ``objects`` and ``gt`` (the
        ground-truth triplets, for matching), ``pairs`` and ``llm_calls``.
    """
    objects = sample.get("objects") or []
    names = {int(k): v for k, v in (sample.get("predicates") or {}).items()}
    if not names:
        raise ConfigError("a PredCls sample needs its evaluated 'predicates' (id -> name)")
    ids = {v: k for k, v in names.items()}
    size = int(sample.get("num_classes") or max(names) + 1)
    pipeline = get_pipeline("recode")
    context = pipeline.settings_for(models.config, settings)
    paper = getattr(context, "protocol", "mmagents") == "paper"
    graph = pipeline.build(models=models, settings=context)  # type: ignore[arg-type]
    image = models.store.put(sample["image"])
    ranked: list[list[Any]] = []
    llm_calls = 0
    for s, subject in enumerate(objects):
        for o, obj in enumerate(objects):
            if s == o:
                continue
            inputs = {
                "image": image,
                "subject": {"category": subject["name"], "box": subject["box"]},
                "object": {"category": obj["name"], "box": obj["box"]},
                "predicates": list(names.values()),
            }
            out = graph.invoke(pipeline.inputs(inputs), context=context)
            llm_calls += int(out.get("llm_calls") or 0)
            vector = _pair_vector(out, ids, size)
            if paper:
                best, score = pair_rank_score(vector)
            else:
                masked = np.full(size, -np.inf)
                masked[list(names)] = vector[list(names)]
                best, score = int(np.argmax(masked[1:])) + 1, float(masked[1:].max())
            ranked.append([s, o, best, score])
    ranked.sort(key=lambda r: -r[3])  # stable: ties keep pair order
    return {
        "prediction": ranked,
        "objects": [{"label": o["label"], "box": o["box"]} for o in objects],
        "gt": [[int(v) for v in r] for r in sample.get("relations") or []],
        "pairs": len(ranked),
        "llm_calls": llm_calls,
    }


def _images(records: Sequence[Mapping[str, Any]]) -> list[PredClsImage]:
    out = []
    for r in records:
        ranked = r.get("prediction") or []
        size = max([int(p[2]) for p in ranked] + [1]) + 1
        scores = np.zeros((len(ranked), size))
        for i, (_s, _o, p, score) in enumerate(ranked):
            scores[i, int(p)] = float(score) if np.isfinite(score) else 0.0
            scores[i, 0] = -np.inf  # background never predicted
        objects = r.get("objects") or []
        out.append(
            PredClsImage(
                labels=[int(o["label"]) for o in objects],
                boxes=[o["box"] for o in objects],
                gt=[tuple(int(v) for v in g) for g in (r.get("gt") or [])],  # type: ignore[misc]
                pairs=[(int(p[0]), int(p[1])) for p in ranked],
                scores=_ranked_scores(scores, ranked),
            )
        )
    return out


def _ranked_scores(scores: np.ndarray, ranked: Sequence[Sequence[Any]]) -> np.ndarray:
    # The list is already in rank order; make later rows strictly lower so the metric's stable
    # sort keeps it (scores may tie or be -inf under the default protocol).
    for i in range(len(ranked)):
        scores[i, int(ranked[i][2])] = float(len(ranked) - i)
    return scores


def predcls_recall(records: Sequence[Mapping[str, Any]], k: int = 50) -> float | None:
    """PredCls Recall@K in percent (images without ground truth skipped)."""
    result = predcls_metrics(_images(records), classes=(1,), ks=(k,))
    return round(100 * result.recall[k], 2) if result.images else None


def predcls_mean_recall(
    records: Sequence[Mapping[str, Any]], k: int = 50, classes: str = "vg150"
) -> float | None:
    """PredCls mean Recall@K in percent over the 24 (vg150) or 26 (gqa200) semantic classes."""
    if classes not in _CLASSES:
        raise ConfigError(f"classes must be one of {sorted(_CLASSES)}, got {classes!r}")
    result = predcls_metrics(_images(records), classes=_CLASSES[classes], ks=(k,))
    return round(100 * result.mean_recall[k], 2) if result.images else None

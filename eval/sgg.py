"""PredCls metrics of scene-graph generation as RECODE reports them (``sgg_eval.py``).

Graph-constrained per-image triplet Recall@K and mean Recall@K over predicate classes, following
``maskrcnn_benchmark/data/datasets/evaluation/vg/sgg_eval.py`` of HKUST-LongGroup/RECODE (itself
Scene-Graph-Benchmark's / Neural-MOTIFS' evaluator):

* **graph constraint**: each ordered (subject, object) pair predicts one predicate, its best
  non-background class (``SGRecall.calculate_recall``: ``1 + rel_scores[:, 1:].argmax(1)``);
  pairs are ranked by that class's score, best first (``PostProcessor.forward`` sorts the
  triples, ``relation_head/inference.py``). Ties keep the pairs' input order (a stable sort; the
  reference's ``torch.sort`` leaves tie order unspecified).
* **match**: a prediction hits every ground-truth triplet with the same (subject label,
  predicate, object label) whose subject and object boxes both overlap it with IoU ≥ 0.5
  (``_compute_pred_matches``); with PredCls's ground-truth boxes this is the same pair, or a
  same-label duplicate box.
* **R@K** of an image = |union of the ground-truth indices hit by the top K predictions| / number
  of ground-truth triplets; the reported R@K is the mean over images. Duplicate ground-truth
  triplets are kept (the test split does not de-duplicate: ``filter_duplicate_rels`` applies to
  train only) and one prediction can hit all of them.
* **mR@K**: per image and predicate class, hits / count for the classes present; each class's
  recall is the mean over the images where it occurs (0 if it never does); mR@K is their sum
  divided by the number of evaluated classes (the 24 / 26 semantic ones under
  ``TEST_GROUP semantic``: ``SGMeanRecall.calculate_mean_recall``).
* an image without ground-truth triplets is skipped (Scene-Graph-Benchmark's
  ``evaluate_relation_of_one_image`` returns early; RECODE's ``load_graphs`` keeps images whose
  relations all fall outside the semantic subset, so such images do occur) and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["KS", "PredClsImage", "PredClsResult", "box_iou", "predcls_metrics", "rank_pairs"]

KS: tuple[int, ...] = (20, 50, 100)


@dataclass(frozen=True)
class PredClsImage:
    """One image's ground truth and predictions.

    Attributes:
        labels: Object labels (one per box).
        boxes: ``(n, 4)`` boxes ``x1, y1, x2, y2``.
        gt: Ground-truth triplets ``(subject index, object index, predicate id)``.
        pairs: Predicted ``(subject index, object index)`` pairs.
        scores: ``(len(pairs), num_classes)`` predicate scores per pair (column 0 = background).
    """

    labels: Sequence[int]
    boxes: Sequence[Sequence[float]]
    gt: Sequence[tuple[int, int, int]]
    pairs: Sequence[tuple[int, int]]
    scores: Any


@dataclass
class PredClsResult:
    """Recall@K and mean Recall@K (fractions in [0, 1]) and what went into them."""

    recall: dict[int, float]
    mean_recall: dict[int, float]
    per_class: dict[int, dict[int, float]]
    images: int
    skipped_no_gt: int
    classes: tuple[int, ...] = field(default=())

    def summary(self) -> dict[str, float]:
        """``{"R@20": ..., "mR@20": ...}`` in percent, as the paper prints them."""
        out = {f"R@{k}": round(100 * v, 2) for k, v in self.recall.items()}
        out.update({f"mR@{k}": round(100 * v, 2) for k, v in self.mean_recall.items()})
        return out


def box_iou(a: Sequence[float], b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` with each row of ``b``, with the +1 pixel convention of the reference's
    ``bbox_overlaps`` (Neural-MOTIFS, ``maskrcnn_benchmark/utils/miscellaneous.py``)."""
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[0], b[:, 0])
    y1 = np.maximum(a[1], b[:, 1])
    x2 = np.minimum(a[2], b[:, 2])
    y2 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1 + 1, 0, None) * np.clip(y2 - y1 + 1, 0, None)
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return np.asarray(inter / (area_a + area_b - inter))


def rank_pairs(scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Graph-constrained predictions: per pair its best non-background class, pairs best first.

    Returns:
        ``(order, predicates)``: pair indices sorted by their best score (stable), and each
        pair's predicted predicate id (indexed by pair, not by rank).
    """
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] < 2:
        raise ValueError("scores must be (pairs, classes) with background column 0")
    predicates = matrix[:, 1:].argmax(axis=1) + 1
    best = matrix[np.arange(len(matrix)), predicates]
    order = np.argsort(-best, kind="stable")
    return order, predicates


def _hits(image: PredClsImage, iou: float) -> list[set[int]]:
    """For each ranked prediction, the ground-truth indices it matches."""
    order, predicates = rank_pairs(image.scores)
    labels = np.asarray(image.labels)
    boxes = np.asarray(image.boxes, dtype=np.float64).reshape(-1, 4)
    out: list[set[int]] = []
    for i in order:
        s, o = image.pairs[i]
        triplet = (labels[s], int(predicates[i]), labels[o])
        hit = set()
        for g, (gs, go, gp) in enumerate(image.gt):
            if (labels[gs], int(gp), labels[go]) != triplet:
                continue
            if box_iou(boxes[gs], boxes[s])[0] >= iou and box_iou(boxes[go], boxes[o])[0] >= iou:
                hit.add(g)
        out.append(hit)
    return out


def predcls_metrics(
    images: Iterable[PredClsImage],
    *,
    classes: Sequence[int],
    ks: Sequence[int] = KS,
    iou: float = 0.5,
) -> PredClsResult:
    """R@K and mR@K over ``images`` (the rules are in the module docstring).

    Args:
        images: Ground truth and scored pairs per image.
        classes: The evaluated predicate ids (mR@K divides by their number).
        ks: The K of R@K.
        iou: Box overlap needed for a match.
    """
    recalls: dict[int, list[float]] = {k: [] for k in ks}
    collect: dict[int, dict[int, list[float]]] = {k: {c: [] for c in classes} for k in ks}
    n = skipped = 0
    for image in images:
        if not image.gt:
            skipped += 1
            continue
        n += 1
        hits = _hits(image, iou) if len(image.pairs) else []
        counts: dict[int, int] = {}
        for _s, _o, p in image.gt:
            counts[int(p)] = counts.get(int(p), 0) + 1
        for k in ks:
            matched: set[int] = set().union(*hits[:k]) if hits else set()
            recalls[k].append(len(matched) / len(image.gt))
            per: dict[int, int] = {}
            for g in matched:
                p = int(image.gt[g][2])
                per[p] = per.get(p, 0) + 1
            for p, count in counts.items():
                if p in collect[k]:
                    collect[k][p].append(per.get(p, 0) / count)
    per_class = {
        k: {c: (float(np.mean(v)) if v else 0.0) for c, v in collect[k].items()} for k in ks
    }
    return PredClsResult(
        recall={k: float(np.mean(v)) if v else 0.0 for k, v in recalls.items()},
        mean_recall={k: sum(per_class[k].values()) / len(classes) for k in ks},
        per_class=per_class,
        images=n,
        skipped_no_gt=skipped,
        classes=tuple(classes),
    )


def image_from_record(record: Mapping[str, Any], scores: Any) -> PredClsImage:
    """A :class:`PredClsImage` from a converted VG150 / GQA200 record and its pair scores."""
    objects = record["objects"]
    return PredClsImage(
        labels=[int(o["label"]) for o in objects],
        boxes=[o["box"] for o in objects],
        gt=[(int(r[0]), int(r[1]), int(r[2])) for r in record["relations"]],
        pairs=[(int(p[0]), int(p[1])) for p in record.get("pairs", [])],
        scores=scores,
    )

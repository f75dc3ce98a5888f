"""Metrics computed from per-sample records, matching the papers each pipeline reproduces.

Every metric is a function ``metric(records, **params) -> float | None`` over records (dicts with
at least ``prediction`` and ``target``, already normalised). ``None`` means undefined (no records,
or no record carries the field); errored samples never reach a metric.

| metric | used by | definition |
|---|---|---|
| ``accuracy`` | memes, VQA (multiple choice), classify | share of predictions equal to the target (or in it, when the target is a list) |
| ``vqa_accuracy`` | VQA (open) | official VQA accuracy: mean over leave-one-annotator-out subsets of min(1, matches / 3) |
| ``macro_f1`` | memes | unweighted mean of per-class F1 |
| ``top_k`` | classify | target among the first k of ``ranking`` (top-1 = ``prediction``) |
| ``recall_at_k`` / ``mean_recall_at_k`` | relations | (class-averaged) share of gold items in the first k of the ranked prediction |
| ``unknown_ratio`` | IdealGPT | share of predictions that are "unknown" / empty |
| ``mean`` / ``avg_rounds`` | IdealGPT, interleaved | mean of a numeric record field (rounds, alignment, consistency, llm_calls) |
| ``ece`` | any with ``confidence`` | expected calibration error of the stated confidence |
| ``predcls_recall`` / ``predcls_mean_recall`` | recode-predcls | RECODE's graph-constrained triplet R@K / mR@K |
| ``cider`` | comm-image-to-text | corpus CIDEr-D of the written steps (``level=step``) or whole texts (``document``) |
| ``ssim`` / ``psnr`` / ``lpips`` | comm-text-to-image | per document, the mean over its (reference, generated) image pairs; then the mean over documents |
| ``inception_score`` / ``fid`` | comm-text-to-image | corpus IS of the generated images / FID between generated and reference images |

The generation metrics (``lpips``, ``inception_score``, ``fid``) run torchmetrics networks; their
pretrained weights must be downloaded (``MetricWeightsMissingError`` otherwise, naming the file).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

__all__ = [
    "METRICS",
    "Record",
    "accuracy",
    "calibration_bins",
    "cider",
    "confusion_matrix",
    "ece",
    "fid",
    "inception_score",
    "is_correct",
    "lpips",
    "macro_f1",
    "mean",
    "mean_recall_at_k",
    "metric_key",
    "per_class",
    "psnr",
    "recall_at_k",
    "ssim",
    "top_k",
    "unknown_ratio",
    "vqa_accuracy",
]

Record = Mapping[str, Any]
Metric = Callable[..., float | None]


def _hashable(value: Any) -> Hashable:
    """Lists (e.g. triplets ``[s, o, predicate]``) become tuples so they can be counted."""
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value  # type: ignore[no-any-return]


def is_correct(prediction: Any, target: Any) -> bool:
    """Exact match; a list target (several accepted answers) matches any of its items."""
    if isinstance(target, list | tuple):
        return _hashable(prediction) in {_hashable(t) for t in target}
    return bool(_hashable(prediction) == _hashable(target))


def accuracy(records: Sequence[Record]) -> float | None:
    """Share of records whose prediction matches the target."""
    if not records:
        return None
    return sum(is_correct(r["prediction"], r["target"]) for r in records) / len(records)


def vqa_accuracy(records: Sequence[Record]) -> float | None:
    """VQA accuracy: for n human answers, the mean over the n leave-one-out subsets of
    ``min(1, #matches in the subset / 3)``; a target that is a single string counts as one answer.
    """
    if not records:
        return None
    total = 0.0
    for r in records:
        answers = list(r["target"]) if isinstance(r["target"], list | tuple) else [r["target"]]
        if len(answers) == 1:
            total += float(r["prediction"] == answers[0])
            continue
        scores = []
        for i in range(len(answers)):
            others = answers[:i] + answers[i + 1 :]
            scores.append(min(1.0, sum(a == r["prediction"] for a in others) / 3))
        total += sum(scores) / len(scores)
    return total / len(records)


def per_class(
    records: Sequence[Record], labels: Sequence[Any] | None = None
) -> dict[Any, dict[str, float]]:
    """Precision, recall, F1 and support of each class (classes: ``labels`` or all seen).

    A class never predicted has precision 0; one with no gold sample has recall 0 (the
    scikit-learn convention with ``zero_division=0``).
    """
    classes = list(labels) if labels is not None else _classes(records)
    tp: dict[Any, int] = defaultdict(int)
    fp: dict[Any, int] = defaultdict(int)
    fn: dict[Any, int] = defaultdict(int)
    for r in records:
        pred, gold = _hashable(r["prediction"]), _hashable(r["target"])
        if pred == gold:
            tp[gold] += 1
        else:
            fp[pred] += 1
            fn[gold] += 1
    out = {}
    for c in classes:
        precision = tp[c] / (tp[c] + fp[c]) if tp[c] + fp[c] else 0.0
        recall = tp[c] / (tp[c] + fn[c]) if tp[c] + fn[c] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[c] = {"precision": precision, "recall": recall, "f1": f1, "support": tp[c] + fn[c]}
    return out


def _classes(records: Sequence[Record]) -> list[Any]:
    seen = {_hashable(r["target"]) for r in records} | {_hashable(r["prediction"]) for r in records}
    return sorted(seen, key=str)


def macro_f1(records: Sequence[Record], labels: Sequence[Any] | None = None) -> float | None:
    """Unweighted mean of per-class F1 over ``labels`` (default: every class seen in targets or
    predictions, so a spurious predicted class lowers the score, as in scikit-learn)."""
    if not records:
        return None
    stats = per_class(records, labels)
    return sum(s["f1"] for s in stats.values()) / len(stats) if stats else None


def confusion_matrix(
    records: Sequence[Record], labels: Sequence[Any] | None = None
) -> tuple[list[Any], list[list[int]]]:
    """Counts ``matrix[i][j]`` of gold class ``labels[i]`` predicted as ``labels[j]``.

    Predictions outside ``labels`` are counted in an extra ``"(other)"`` column and row.
    """
    classes = list(labels) if labels is not None else _classes(records)
    index = {c: i for i, c in enumerate(classes)}
    other = len(classes)
    size = other + 1
    matrix = [[0] * size for _ in range(size)]
    for r in records:
        i = index.get(_hashable(r["target"]), other)
        j = index.get(_hashable(r["prediction"]), other)
        matrix[i][j] += 1
    if not any(matrix[other]) and not any(row[other] for row in matrix):
        return classes, [row[:other] for row in matrix[:other]]
    return [*classes, "(other)"], matrix


def top_k(records: Sequence[Record], k: int = 1, field: str = "ranking") -> float | None:
    """Share of records whose target is among the first ``k`` entries of ``record[field]``.

    Records without ``field`` use ``[prediction]`` (enough for top-1).
    """
    if not records:
        return None
    hits = 0
    for r in records:
        ranking = r.get(field) or [r["prediction"]]
        hits += any(is_correct(item, r["target"]) for item in ranking[:k])
    return hits / len(records)


def _gold_set(target: Any) -> set[Hashable]:
    items = target if isinstance(target, list | tuple) else [target]
    return {_hashable(t) for t in items}


def _class_of(item: Hashable) -> Hashable:
    """The predicate of a triplet ``(subject, object, predicate)``; a bare item is its own class."""
    return item[-1] if isinstance(item, tuple) and item else item


def recall_at_k(records: Sequence[Record], k: int = 50, field: str = "prediction") -> float | None:
    """Mean over records of |gold ∩ first k ranked predictions| / |gold| (Recall@K).

    ``record[field]`` is a ranked list (predicates, or ``[subject, object, predicate]``
    triplets); ``target`` is the gold list. Records with an empty gold list are skipped.
    """
    values = []
    for r in records:
        gold = _gold_set(r["target"])
        if gold:
            top = {_hashable(p) for p in (r.get(field) or [])[:k]}
            values.append(len(gold & top) / len(gold))
    return sum(values) / len(values) if values else None


def mean_recall_at_k(
    records: Sequence[Record], k: int = 50, field: str = "prediction"
) -> float | None:
    """Mean Recall@K: Recall@K computed per predicate class, then averaged over classes.

    As in the scene-graph benchmark code (Tang et al., 2020): for each record and each class
    present in its gold list, the recall of that class's gold items within the top k; each class's
    recall is averaged over the records where it occurs, then classes are averaged.
    """
    per_class_recalls: dict[Hashable, list[float]] = defaultdict(list)
    for r in records:
        top = {_hashable(p) for p in (r.get(field) or [])[:k]}
        by_class: dict[Hashable, set[Hashable]] = defaultdict(set)
        for item in _gold_set(r["target"]):
            by_class[_class_of(item)].add(item)
        for cls, gold in by_class.items():
            per_class_recalls[cls].append(len(gold & top) / len(gold))
    if not per_class_recalls:
        return None
    return sum(sum(v) / len(v) for v in per_class_recalls.values()) / len(per_class_recalls)


def unknown_ratio(
    records: Sequence[Record], values: Sequence[Any] = ("unknown", "", None)
) -> float | None:
    """Share of records whose prediction is one of ``values`` (the model declined to answer)."""
    if not records:
        return None
    unknown = {v.lower() if isinstance(v, str) else v for v in values}
    count = sum(
        (r["prediction"].strip().lower() if isinstance(r["prediction"], str) else r["prediction"])
        in unknown
        for r in records
    )
    return count / len(records)


def mean(records: Sequence[Record], field: str) -> float | None:
    """Mean of the numeric ``field`` over the records that carry it (booleans count as 0/1)."""
    values = [float(r[field]) for r in records if isinstance(r.get(field), int | float)]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else None


def avg_rounds(records: Sequence[Record], field: str = "rounds") -> float | None:
    """Average number of reasoning rounds per sample (IdealGPT)."""
    return mean(records, field)


def calibration_bins(
    records: Sequence[Record], bins: int = 10, field: str = "confidence"
) -> list[tuple[float, float, int]]:
    """Equal-width confidence bins: ``(mean confidence, accuracy, count)`` of each non-empty bin."""
    groups: dict[int, list[tuple[float, bool]]] = defaultdict(list)
    for r in records:
        conf = r.get(field)
        if isinstance(conf, int | float) and 0.0 <= conf <= 1.0:
            index = min(int(conf * bins), bins - 1)
            groups[index].append((float(conf), is_correct(r["prediction"], r["target"])))
    out = []
    for index in sorted(groups):
        items = groups[index]
        out.append(
            (
                sum(c for c, _ in items) / len(items),
                sum(ok for _, ok in items) / len(items),
                len(items),
            )
        )
    return out


def ece(records: Sequence[Record], bins: int = 10, field: str = "confidence") -> float | None:
    """Expected calibration error: Σ_bins (count/n) · |accuracy − mean confidence|."""
    table = calibration_bins(records, bins, field)
    n = sum(count for _, _, count in table)
    if not n:
        return None
    return sum(count / n * abs(acc - conf) for conf, acc, count in table)


def _predcls(name: str, records: Sequence[Record], **params: Any) -> float | None:
    from mmagents.eval import recode_predcls

    return getattr(recode_predcls, name)(records, **params)  # type: ignore[no-any-return]


# -- CoMM (caption and image metrics over a task's outputs) -------------------------------------


def cider(
    records: Sequence[Record],
    level: str = "step",
    field: str = "prediction",
    references: str = "references",
) -> float | None:
    """Corpus CIDEr-D (:func:`mmagents.eval.caption_metrics.cider_d`) of written step texts.

    ``record[field]`` and ``record[references]`` are lists of step texts. ``level=step``: every
    step of every record is one "image" whose single reference is the ground-truth step, both
    lists cut to the shorter (CoMM's ``parse_data_for_task1``); ``level=document``: each record's
    steps joined by spaces against the ground truth joined likewise.
    """
    from mmagents.eval.caption_metrics import cider_d

    if level not in ("step", "document"):
        raise ValueError(f"level must be 'step' or 'document', got {level!r}")
    candidates: dict[str, str] = {}
    refs: dict[str, list[str]] = {}
    for index, r in enumerate(records):
        written = [str(t) for t in r.get(field) or []]
        gold = [str(t) for t in r.get(references) or []]
        n = min(len(written), len(gold))
        if not n:
            continue
        if level == "document":
            candidates[str(index)] = " ".join(written[:n])
            refs[str(index)] = [" ".join(gold[:n])]
        else:
            for step in range(n):
                candidates[f"{index}:{step}"] = written[step]
                refs[f"{index}:{step}"] = [gold[step]]
    return cider_d(candidates, refs) if candidates else None


def _per_document(
    records: Sequence[Record],
    score: Callable[[list[tuple[str, str]]], float],
    pairing: str,
    generated: str,
    reference: str,
) -> float | None:
    """Mean over records of ``score(pairs)`` (records without a pair are skipped)."""
    from mmagents.eval.image_metrics import image_pairs

    values = []
    for r in records:
        pairs = image_pairs(r.get(generated) or [], r.get(reference) or [], pairing)
        if pairs:
            values.append(score(pairs))
    return sum(values) / len(values) if values else None


def _pairwise(name: str, size: int, **options: Any) -> Callable[[list[tuple[str, str]]], float]:
    from mmagents.eval import image_metrics as im

    fn = getattr(im, name)

    def score(pairs: list[tuple[str, str]]) -> float:
        values = [
            fn(im.load_rgb(a, size), im.load_rgb(b, size), data_range=255.0, **options)
            for a, b in pairs
        ]
        return float(sum(values) / len(values))

    return score


def ssim(
    records: Sequence[Record],
    pairing: str = "all",
    size: int = 256,
    window: str = "uniform",
    generated: str = "generated_images",
    reference: str = "reference_images",
) -> float | None:
    """SSIM of generated against reference images (8-bit, resized to ``size``; CoMM's SSIM.py)."""
    score = _pairwise("ssim", size, window=window)
    return _per_document(records, score, pairing, generated, reference)


def psnr(
    records: Sequence[Record],
    pairing: str = "all",
    size: int = 256,
    generated: str = "generated_images",
    reference: str = "reference_images",
) -> float | None:
    """PSNR in dB of generated against reference images (CoMM's PSNR.py)."""
    return _per_document(records, _pairwise("psnr", size), pairing, generated, reference)


def lpips(
    records: Sequence[Record],
    pairing: str = "all",
    size: int = 256,
    net: Any = None,
    net_type: str = "squeeze",
    generated: str = "generated_images",
    reference: str = "reference_images",
) -> float | None:
    """LPIPS (torchmetrics, SqueezeNet by default as CoMM's LPIPS.py) of generated against
    reference images; ``net`` replaces the network (a module or ``"module:attr"``)."""
    from mmagents.eval import image_metrics as im

    def score(pairs: list[tuple[str, str]]) -> float:
        return im.lpips(pairs, net=net, net_type=net_type, size=size)

    return _per_document(records, score, pairing, generated, reference)


def _all_images(records: Sequence[Record], field: str) -> list[str]:
    return [str(p) for r in records for p in r.get(field) or [] if p]


def inception_score(
    records: Sequence[Record],
    field: str = "generated_images",
    feature: Any = None,
    splits: int = 10,
) -> float | None:
    """Inception Score over every image of ``field`` in the records (torchmetrics)."""
    from mmagents.eval import image_metrics as im

    paths = _all_images(records, field)
    return im.inception_score(paths, feature=feature, splits=splits) if paths else None


def fid(
    records: Sequence[Record],
    feature: Any = None,
    weights: str | None = None,
    generated: str = "generated_images",
    reference: str = "reference_images",
) -> float | None:
    """FID between all generated and all reference images of the records (torchmetrics)."""
    from mmagents.eval import image_metrics as im

    gen, ref = _all_images(records, generated), _all_images(records, reference)
    if not gen or not ref:
        return None
    return im.fid(gen, ref, feature=feature, weights=weights)


#: name → metric function; task YAML files refer to these names.
METRICS: dict[str, Metric] = {
    "accuracy": accuracy,
    "vqa_accuracy": vqa_accuracy,
    "macro_f1": macro_f1,
    "top_k": top_k,
    "recall_at_k": recall_at_k,
    "mean_recall_at_k": mean_recall_at_k,
    "unknown_ratio": unknown_ratio,
    "mean": mean,
    "avg_rounds": avg_rounds,
    "ece": ece,
    # CoMM: caption and image metrics over a task's outputs (torch only inside lpips/IS/FID).
    "cider": cider,
    "ssim": ssim,
    "psnr": psnr,
    "lpips": lpips,
    "inception_score": inception_score,
    "fid": fid,
    # PredCls (RECODE's sgg_eval.py rules); imported on use so this table stays light.
    "predcls_recall": lambda records, **p: _predcls("predcls_recall", records, **p),
    "predcls_mean_recall": lambda records, **p: _predcls("predcls_mean_recall", records, **p),
}


def metric_key(name: str, params: Mapping[str, Any]) -> str:
    """The default key of a metric in ``metrics.json``: ``top_5``, ``recall@50``, ``mean_alignment``."""
    if name == "top_k":
        return f"top_{params.get('k', 1)}"
    if name == "recall_at_k":
        return f"recall@{params.get('k', 50)}"
    if name == "mean_recall_at_k":
        return f"mean_recall@{params.get('k', 50)}"
    if name == "mean":
        return f"mean_{params.get('field', '?')}"
    return name

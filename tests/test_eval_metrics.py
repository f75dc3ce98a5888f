"""Every eval metric and normaliser on small cases computed by hand."""

from __future__ import annotations

import pytest

from mmagents.eval import metrics as M
from mmagents.eval.normalize import build_normalizer, label_map, vqa_normalize
from mmagents.eval.runner import compute_metrics
from mmagents.eval.tasks import TaskSpec


def recs(pairs: list[tuple[object, object]], **extra: list[object]) -> list[dict[str, object]]:
    out = []
    for i, (pred, gold) in enumerate(pairs):
        record = {"id": str(i), "prediction": pred, "target": gold}
        record.update({k: v[i] for k, v in extra.items()})
        out.append(record)
    return out


def test_accuracy_exact_and_list_targets() -> None:
    assert M.accuracy(recs([("a", "a"), ("b", "a"), ("c", ["c", "d"]), ("x", ["c"])])) == 0.5
    assert M.accuracy([]) is None


def test_vqa_accuracy_leave_one_out() -> None:
    # 10 answers, "2" given twice: leaving out one of the two "2"s leaves 1 match (1/3), leaving
    # out any of the 8 others leaves 2 matches (2/3): (2 * 1/3 + 8 * 2/3) / 10 = 0.6.
    answers = ["2", "2", "3", "3", "3", "3", "3", "3", "3", "3"]
    assert M.vqa_accuracy(recs([("2", answers)])) == pytest.approx(0.6)
    # "3" given 8 times: every subset has >= 7 matches -> 1.0; a single-string target is exact.
    assert M.vqa_accuracy(recs([("3", answers), ("no", "no")])) == pytest.approx(1.0)


def test_macro_f1_by_hand_and_against_sklearn() -> None:
    from sklearn.metrics import f1_score

    gold = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", "a"]
    records = recs(list(zip(pred, gold, strict=True)))
    # a: P=1/2 R=1/2 F=1/2; b: P=2/3 R=1 F=0.8; c: F=0 -> (0.5 + 0.8 + 0) / 3
    assert M.macro_f1(records) == pytest.approx(1.3 / 3)
    assert M.macro_f1(records) == pytest.approx(f1_score(gold, pred, average="macro"))
    # restricting the labels to {a, b}: (0.5 + 0.8) / 2
    assert M.macro_f1(records, labels=["a", "b"]) == pytest.approx(0.65)


def test_per_class_and_confusion_matrix() -> None:
    records = recs([("a", "a"), ("b", "a"), ("b", "b"), ("zzz", "b")])
    stats = M.per_class(records, ["a", "b"])
    assert stats["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert stats["b"]["precision"] == 0.5 and stats["b"]["recall"] == 0.5
    labels, matrix = M.confusion_matrix(records, ["a", "b"])
    assert labels == ["a", "b", "(other)"]
    assert matrix == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]
    assert M.confusion_matrix(recs([("a", "a"), ("a", "b")]), ["a", "b"]) == (
        ["a", "b"],
        [[1, 0], [1, 0]],
    )


def test_top_k_uses_ranking_then_prediction() -> None:
    records = recs(
        [("cat", "cat"), ("dog", "cat"), ("dog", "fox")],
        ranking=[["cat", "dog"], ["dog", "x", "y", "z", "cat", "fox"], ["dog", "fox"]],
    )
    assert M.top_k(records, k=1) == pytest.approx(1 / 3)
    assert M.top_k(records, k=2) == pytest.approx(2 / 3)
    assert M.top_k(records, k=5) == pytest.approx(1.0)
    assert M.top_k(recs([("a", "a"), ("b", "a")]), k=5) == 0.5  # no ranking: prediction only


def test_recall_at_k_and_mean_recall_at_k() -> None:
    records = recs(
        [
            (["on", "near", "has"], ["on", "has"]),  # R@1 = 1/2, R@3 = 1
            (["near", "on"], ["on"]),  # R@1 = 0, R@3 = 1
            (["on", "x"], ["has"]),  # R@1 = 0, R@3 = 0
        ]
    )
    assert M.recall_at_k(records, k=1) == pytest.approx((0.5 + 0 + 0) / 3)
    assert M.recall_at_k(records, k=3) == pytest.approx((1 + 1 + 0) / 3)
    # per class at k=1: on -> [1, 0] mean 0.5; has -> [0, 0] mean 0 -> mR@1 = 0.25
    assert M.mean_recall_at_k(records, k=1) == pytest.approx(0.25)
    # k=3: on -> [1, 1] = 1; has -> [1, 0] = 0.5 -> mR@3 = 0.75
    assert M.mean_recall_at_k(records, k=3) == pytest.approx(0.75)


def test_recall_on_triplets_groups_by_predicate() -> None:
    records = recs([([[0, 1, "on"], [1, 2, "has"]], [[0, 1, "on"], [2, 1, "on"], [1, 2, "has"]])])
    assert M.recall_at_k(records, k=1) == pytest.approx(1 / 3)
    # on: 1 of 2 found at k=2 -> 0.5; has: 1 of 1 -> 1.0; mean 0.75
    assert M.mean_recall_at_k(records, k=2) == pytest.approx(0.75)


def test_unknown_ratio_mean_rounds() -> None:
    records = recs(
        [("Unknown ", "a"), ("", "a"), (None, "a"), ("b", "b")],
        rounds=[1, 2, 3, 2],
        alignment=[0.5, None, 1.0, True],
    )
    assert M.unknown_ratio(records) == 0.75
    assert M.unknown_ratio(records, values=["unknown"]) == 0.25
    assert M.avg_rounds(records) == 2.0
    assert M.mean(records, "alignment") == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    assert M.mean(records, "missing") is None


def test_calibration_bins_and_ece() -> None:
    records = recs(
        [("a", "a"), ("b", "a"), ("a", "a"), ("a", "a")], confidence=[0.9, 0.9, 0.55, 0.58]
    )
    bins = M.calibration_bins(records, bins=10)
    assert bins == [(pytest.approx(0.565), 1.0, 2), (pytest.approx(0.9), 0.5, 2)]
    # ECE = 2/4 * |1 - 0.565| + 2/4 * |0.5 - 0.9| = 0.2175 + 0.2
    assert M.ece(records) == pytest.approx(0.4175)
    assert M.ece(recs([("a", "a")])) is None


def test_vqa_normalize_matches_the_official_rules() -> None:
    assert vqa_normalize("Two dogs.") == "2 dogs"
    assert vqa_normalize("the Black-and-White cat") == "black and white cat"
    assert vqa_normalize("It isnt") == "it isn't"
    assert vqa_normalize("3.5") == "3.5"
    assert vqa_normalize("1,000") == "1000"
    assert vqa_normalize(7) == 7


def test_label_map_and_builder() -> None:
    normalise = label_map({"harmful": ["very harmful", 1], "harmless": ["not harmful", 0]})
    assert [normalise(v) for v in ["Very Harmful", 1, "0", " harmless ", "other"]] == [
        "harmful",
        "harmful",
        "harmless",
        "harmless",
        "other",
    ]
    lists = build_normalizer("lower")
    assert lists([" A", "b "]) == ["a", "b"]


def test_compute_metrics_normalises_skips_errors_and_reports_failures() -> None:
    task = TaskSpec.model_validate(
        {
            "task": "t",
            "version": 1,
            "runner": "m:f",
            "normalizer": {"name": "label_map", "mapping": {"harmful": ["1"], "harmless": ["0"]}},
            "metrics": [
                "accuracy",
                {"mean": {"field": "rounds", "key": "rounds"}},
                {"top_k": {"k": "x"}},
            ],
        }
    )
    records = [
        {"id": "1", "prediction": "HARMFUL", "target": 1, "rounds": 2, "error": None},
        {"id": "2", "prediction": "harmless", "target": "1", "rounds": 4, "error": None},
        {
            "id": "3",
            "prediction": None,
            "target": "0",
            "error": {"type": "ValueError", "message": ""},
        },
    ]
    values, failures = compute_metrics(task, records)
    assert values["accuracy"] == 0.5 and values["rounds"] == 3.0
    assert values["top_x"] is None and "TypeError" in failures["top_x"]

"""PredCls Recall@K / mean Recall@K (eval/sgg.py) on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from mmagents.eval.sgg import PredClsImage, box_iou, predcls_metrics, rank_pairs

BOXES = [[0, 0, 9, 9], [20, 0, 29, 9], [40, 0, 49, 9]]


def _scores(rows: list[dict[int, float]], n: int = 8) -> np.ndarray:
    out = np.zeros((len(rows), n))
    for i, row in enumerate(rows):
        for c, v in row.items():
            out[i, c] = v
    return out


def test_recall_graph_constrained() -> None:
    # gt: (0 -5-> 1), (0 -6-> 2). pair (0,1) predicts 5 (hit), (0,2) predicts 7 (miss: one
    # predicate per pair, so its 6 at 0.6 never counts), (1,2) predicts 6 (wrong pair).
    image = PredClsImage(
        labels=[1, 2, 3],
        boxes=BOXES,
        gt=[(0, 1, 5), (0, 2, 6)],
        pairs=[(0, 1), (0, 2), (1, 2)],
        scores=_scores([{5: 0.9}, {7: 0.8, 6: 0.6}, {6: 0.7}]),
    )
    result = predcls_metrics([image], classes=(5, 6, 7), ks=(1, 2, 3))
    assert result.recall == {1: 0.5, 2: 0.5, 3: 0.5}
    # per class: 5 -> 1/1, 6 -> 0/1, 7 never in the ground truth -> 0; mR = 1/3.
    assert result.mean_recall[3] == pytest.approx(1 / 3)


def test_ties_keep_input_order() -> None:
    gt = [(0, 1, 5)]
    wrong_first = PredClsImage(
        [1, 2, 3], BOXES, gt, [(1, 2), (0, 1)], _scores([{4: 0.5}, {5: 0.5}])
    )
    right_first = PredClsImage(
        [1, 2, 3], BOXES, gt, [(0, 1), (1, 2)], _scores([{5: 0.5}, {4: 0.5}])
    )
    assert predcls_metrics([wrong_first], classes=(5,), ks=(1,)).recall[1] == 0.0
    assert predcls_metrics([right_first], classes=(5,), ks=(1,)).recall[1] == 1.0
    order, predicates = rank_pairs(_scores([{4: 0.5}, {5: 0.5}, {3: 0.9}]))
    assert order.tolist() == [2, 0, 1] and predicates.tolist() == [4, 5, 3]


def test_duplicate_triplets_are_all_hit_by_one_prediction() -> None:
    image = PredClsImage([1, 2], BOXES[:2], [(0, 1, 5), (0, 1, 5)], [(0, 1)], _scores([{5: 1.0}]))
    result = predcls_metrics([image], classes=(5,), ks=(20,))
    assert result.recall[20] == 1.0 and result.mean_recall[20] == 1.0


def test_same_label_duplicate_box_matches() -> None:
    # objects 1 and 2 share label 2 and overlap with IoU >= 0.5: a prediction on (0, 2)
    # matches the ground truth on (0, 1) (the reference matches by label and IoU, not index).
    boxes = [[0, 0, 9, 9], [20, 0, 29, 9], [21, 0, 29, 9]]
    assert box_iou(boxes[1], np.array([boxes[2]]))[0] == pytest.approx(90 / 100)
    image = PredClsImage([1, 2, 2], boxes, [(0, 1, 5)], [(0, 2)], _scores([{5: 1.0}]))
    assert predcls_metrics([image], classes=(5,), ks=(1,)).recall[1] == 1.0


def test_images_without_ground_truth_are_skipped() -> None:
    empty = PredClsImage([1, 2], BOXES[:2], [], [(0, 1)], _scores([{5: 1.0}]))
    hit = PredClsImage([1, 2], BOXES[:2], [(0, 1, 5), (0, 1, 5)], [(0, 1)], _scores([{5: 1.0}]))
    miss = PredClsImage([1, 2, 3], BOXES, [(0, 1, 5), (0, 2, 6)], [(0, 1)], _scores([{5: 1.0}]))
    result = predcls_metrics([empty, hit, miss], classes=(5, 6, 7), ks=(20,))
    assert result.images == 2 and result.skipped_no_gt == 1
    assert result.recall[20] == pytest.approx((1.0 + 0.5) / 2)
    # class 5: mean(1, 1) = 1; class 6: 0; class 7: never seen -> 0; divided by 3.
    assert result.mean_recall[20] == pytest.approx(1 / 3)
    assert result.summary()["mR@20"] == pytest.approx(33.33)


def test_rank_pairs_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        rank_pairs(np.zeros(3))

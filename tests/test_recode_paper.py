"""Parity tests of RECODE's paper rules (graphs/_recode_paper.py) on fixed inputs.

Every expected value is worked out by hand from the reference code (HKUST-LongGroup/RECODE,
cited beside each test), not produced by the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmagents.graphs import _recode_paper as paper


def test_semantic_subsets_have_the_papers_sizes() -> None:
    # defaults.py:607 / :609: 24 VG150 and 26 GQA200 predicate ids.
    assert len(paper.VG150_SEMANTIC) == 24 and len(set(paper.VG150_SEMANTIC)) == 24
    assert len(paper.GQA200_SEMANTIC) == 26 and len(set(paper.GQA200_SEMANTIC)) == 26
    assert paper.VG150_SEMANTIC[0] == 11 and paper.GQA200_SEMANTIC[-1] == 47


def test_categories_are_exact_list_membership() -> None:
    # clip.py:252-258 with defaults.py:615-616: anything not listed is a product.
    assert paper.paper_category("man") == "human"
    assert paper.paper_category("dog") == "animal"
    assert paper.paper_category("skateboarder") == "product"  # a person, but not in _C.HUMAN
    assert paper.paper_category("Man") == "product"  # exact, case-sensitive membership
    assert paper.cue_key("riding", "man", "horse") == "riding_human_animal"


def test_weights_are_normalised_one_after_another() -> None:
    # clip.py:393-395: w0 = 1/(1+1+1+1e-3); w1 = 1/(w0+1+1+1e-3); w2 = 1/(w0+w1+1+1e-3).
    w0 = 1 / 3.001
    w1 = 1 / (w0 + 2.001)
    w2 = 1 / (w0 + w1 + 1.001)
    assert paper.normalise_weights([1, 1, 1]) == pytest.approx((w0, w1, w2))
    assert paper.normalise_weights([1, 1, 1]) == pytest.approx((0.333222, 0.428408, 0.567334), 1e-5)
    # SPATIAL False (clip.py:397-399): the spatial weight is dropped first.
    assert paper.normalise_weights([2, 2, 5], spatial=False) == pytest.approx(
        (2 / 4.001, 2 / (2 / 4.001 + 2.001), 0.0)
    )
    with pytest.raises(ValueError):
        paper.normalise_weights([1, 2])


def test_cue_texts_use_plain_replacement() -> None:
    # clip.py:275-283: "{label}, {cue}", strip, '.' removed, subject -> label, object -> something.
    assert (
        paper.subject_cue_text("The subject is holding the object.\n", "man")
        == "man, The man is holding something"
    )
    # clip.py:308-315: 'object' -> label first, then 'subject' -> 'something' (substring too).
    assert paper.object_cue_text("subjects nearby", "dog") == "dog, somethings nearby"
    # generate_spatial_logits.py: lower, subject/object and the key's categories -> boxes.
    assert (
        paper.spatial_cue_text("The subject is above the object.", "on_human_product")
        == "The red box is above the green box"
    )
    assert (
        paper.spatial_cue_text("A human stands on a product", "standing on_human_product")
        == "A red box stands on a green box"
    )
    assert paper.usable_cues(["a", "", "ok"]) == ["ok"]


@pytest.mark.parametrize(
    ("subject", "obj", "name"),
    [
        # union 299x99; areas 100*100 = 10000 in (0.05, 0.5] of 29601 -> mid; off (200, 0):
        # cos 1 -> 'left'; 200 > 100+100 is False, 200 < |50-50| False -> 'mid'.
        ([0, 0, 99, 99], [200, 0, 299, 99], "mid_central_mid_central_left_mid"),
        # subject 100x10 (h <= w/4: horizontal), area 1000 <= 0.5*14751 -> mid; object 10000
        # > 7375.5 -> big; off (0, 95): cos 0, off_y > 0 -> 'top'; 95 vs 110 and |5-50| -> mid.
        ([0, 0, 99, 9], [0, 50, 99, 149], "mid_horizontal_big_central_top_mid"),
        # equal centres: cos is NaN, every test fails -> last branch, off_y = 0 -> top_right;
        # 0 < |50+25| and 0 < |50-25| -> small. Subject 10000 > 4900.5 -> big.
        ([0, 0, 99, 99], [25, 25, 74, 74], "big_central_mid_central_top_right_small"),
        # object up-left of the subject: off (-100, -100), cos -0.707 -> bottom_right.
        ([100, 100, 149, 149], [0, 0, 49, 49], "mid_central_mid_central_bottom_right_mid"),
    ],
)
def test_layout_binning(subject: list[float], obj: list[float], name: str) -> None:
    assert paper.layout_name(subject, obj) == name
    assert name in paper.LAYOUT_NAMES


def test_canonical_layouts() -> None:
    # draw_img.py: 3*3*3*3*3*8 names; mid central = 0.25 x 0.25, mid distance 0.6 * 0.25 = 0.15.
    assert len(paper.LAYOUT_NAMES) == 1944 == len(set(paper.LAYOUT_NAMES))
    layout = paper.canonical_layout("mid_central_mid_central_left_mid")
    # subject at x in [-0.125, 0.125], object at [0.025, 0.275]: union 0.4 x 0.25.
    assert layout.subject == pytest.approx((0.0, 0.0, 0.625, 1.0))
    assert layout.object == pytest.approx((0.375, 0.0, 0.625, 1.0))
    with pytest.raises(ValueError):
        paper.canonical_layout("huge_central_mid_central_left_mid")
    image = paper.draw_layout("big_vertical_small_horizontal_top_left_big")
    assert image.size == (300, 200)
    # The subject (red, drawn last) covers the axes' top-left corner in this layout.
    r, g, b = image.getpixel((45, 30))
    assert r > 200 and g < 160 and b < 160


def test_predicate_scores_formula_filter_and_subset() -> None:
    names = {1: "on", 2: "holding", 3: "riding", 4: "has"}
    tables = paper.FilterTables(subject={"man_riding": False}, object={})
    scores = paper.predicate_scores(
        num_classes=5,
        semantic=(2, 3),
        names=names,
        subject="man",
        obj="horse",
        subject_name={1: 9.0, 2: 20.0, 3: 22.0, 4: 5.0},
        object_name={2: 18.0, 3: 21.0},
        cue_scores={2: (25.0, 24.0, 30.0)},
        weights={2: [1, 1, 1]},
        tables=tables,
    )
    w0, w1, w2 = 1 / 3.001, 0.0, 0.0
    w1 = 1 / (w0 + 2.001)
    w2 = 1 / (w0 + w1 + 1.001)
    # S_name + O_name + 2.0 * (w_s S + w_o O + 0.6 w_p P) = 20 + 18 + 2 * (...) = 95.6487...
    expected = 20 + 18 + 2.0 * (w0 * 25 + w1 * 24 + 0.6 * w2 * 30)
    assert expected == pytest.approx(95.648727, abs=1e-5)
    assert scores.tolist() == pytest.approx([0.0, 0.0, expected, 0.0, 0.0])


def test_predicate_without_cues_keeps_its_name_term() -> None:
    scores = paper.predicate_scores(
        num_classes=3,
        semantic=(1, 2),
        names={1: "on", 2: "under"},
        subject="cup",
        obj="table",
        subject_name={1: 10.0, 2: 4.0},
        object_name={1: 1.0, 2: 2.0},
        cue_scores={},
        weights={},
        tables=paper.FilterTables(),
    )
    assert scores.tolist() == [0.0, 11.0, 6.0]


def test_pair_rank_score_is_the_softmax_over_all_classes() -> None:
    # inference.py: softmax over the whole vector, best of classes 1..; exp(0) counts too.
    best, prob = paper.pair_rank_score(np.array([0.0, 1.0, 3.0, 0.0]))
    assert best == 2
    assert prob == pytest.approx(1 / (1 + math.exp(-2) + 2 * math.exp(-3)))
    with pytest.raises(ValueError):
        paper.pair_rank_score(np.array([1.0]))

"""CIDEr-D against values worked out by hand from the published definition."""

from __future__ import annotations

import math

import pytest

from mmagents.eval.caption_metrics import cider_d, tokenize


def test_cider_d_two_image_reference_value() -> None:
    # N = 2 images; df("a") = 2 -> idf 0; every other n-gram df 1 -> idf log 2.
    # image 1: "a cat" vs "a cat": n=1 and n=2 similarities 1, n=3, n=4 empty (0), no length
    #   penalty -> mean over n = 0.5, x10 = 5.0.
    # image 2: "a dog" vs "a bird": no shared weighted n-gram -> 0. Corpus: 2.5.
    value = cider_d({"1": "a cat", "2": "a dog"}, {"1": ["a cat"], "2": ["a bird"]})
    assert value == pytest.approx(2.5)


def test_cider_d_length_penalty_and_clipping() -> None:
    # image 1: "a cat cat" vs "a cat"; idf as above (log 2 for 'cat', 'a cat', 'cat cat').
    # n=1: hyp {a:0, cat: 2 log2}, ref {a:0, cat: log2}: min(2l, l)*l / (2l * l) = 1/2.
    # n=2: hyp {a cat: l, cat cat: l} norm l*sqrt2, ref {a cat: l}: l*l / (l*sqrt2 * l) = 1/sqrt2.
    # n=3: hyp {a cat cat: l}, ref empty -> 0. Length penalty exp(-1/72).
    l_pen = math.exp(-1 / 72)
    expected_1 = 10 * (0.5 + 1 / math.sqrt(2)) / 4 * l_pen
    value = cider_d({"1": "a cat cat", "2": "a dog"}, {"1": ["a cat"], "2": ["a bird"]})
    assert value == pytest.approx(expected_1 / 2)


def test_tokenize_and_errors() -> None:
    assert tokenize("A Cat, sitting!") == ["a", "cat", "sitting"]
    with pytest.raises(ValueError):
        cider_d({"1": "x"}, {"2": ["x"]})
    with pytest.raises(ValueError):
        cider_d({"1": "x"}, {"1": []})


def test_cider_d_matches_coco_caption_when_installed() -> None:
    # CoMM scores task 1 with pycocoevalcap's Cider (coco-caption's CIDEr-D); it is not a
    # dependency (a 100 MB wheel of Java jars), so this parity check runs only where it is.
    coco = pytest.importorskip("pycocoevalcap.cider.cider", reason="pycocoevalcap not installed")
    import random

    rng = random.Random(0)
    words = [
        "a",
        "the",
        "cat",
        "dog",
        "sits",
        "runs",
        "on",
        "mat",
        "red",
        "big",
        "small",
        "bowl",
        "water",
        "tea",
    ]

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(2, 9)))

    cands = {str(i): sentence() for i in range(20)}
    refs = {str(i): [sentence() for _ in range(3)] for i in range(20)}
    expected, _ = coco.Cider().compute_score(
        {k: [" ".join(tokenize(r)) for r in v] for k, v in refs.items()},
        {k: [" ".join(tokenize(v))] for k, v in cands.items()},
    )
    assert cider_d(cands, refs) == pytest.approx(expected)

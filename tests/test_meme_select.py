"""Honest CV selection of the frozen-encoder meme student, the seeded val split, the embedding cache.

Synthetic vectors check the selection maths (folds, logistic regression, the rationale components,
calibration, the TF-IDF ensemble); a tiny random BERT (tests/_tiny_models.py) checks the trainer end
to end: the validation file is read only after the choice is made and the head refitted, and the
served student reproduces the refitted head's decisions.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmagents.errors import ConfigError
from mmagents.finetune import meme_select as S
from mmagents.models.memes.tfidf import Tfidf

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "memes"


def _synthetic(n: int = 240, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    X = rng.normal(size=(n, d)) + np.outer(y, np.r_[2.0, np.zeros(d - 1)])
    texts = [("hate them" if label else "nice cat") + f" {i}" for i, label in enumerate(y)]
    return X, y, texts


def test_stratified_folds_are_balanced_and_seeded() -> None:
    y = np.array([0] * 30 + [1] * 20)
    folds = S.stratified_folds(y, 5, seed=0)
    for f in range(5):
        assert (y[folds == f] == 1).sum() == 4 and (y[folds == f] == 0).sum() == 6
    assert (S.stratified_folds(y, 5, 0) == folds).all()
    assert (S.stratified_folds(y, 5, 1) != folds).any()


def test_logreg_fits_and_soft_targets_pull_towards_half() -> None:
    X, y, _ = _synthetic()
    w, b = S.fit_logreg(X, y.astype(float), C=1.0)
    assert S.score_predictions(y, X @ w + b >= 0)["accuracy"] > 0.8
    w_half, _ = S.fit_logreg(X, np.full(len(y), 0.5), C=1.0)
    assert np.abs(w_half).max() < 1e-3  # nothing to learn from uniform targets
    # a stronger penalty shrinks the weights
    w_small, _ = S.fit_logreg(X, y.astype(float), C=0.001)
    assert np.linalg.norm(w_small) < np.linalg.norm(w)


def test_score_predictions_by_hand() -> None:
    scores = S.score_predictions(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    assert scores["accuracy"] == 0.75
    # F1(harmful) = 2/3, F1(harmless) = 0.8
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_select_recipe_records_folds_candidates_and_a_choice() -> None:
    X, y, texts = _synthetic()
    rng = np.random.default_rng(1)
    R = np.c_[y * 3.0, rng.normal(size=(len(y), 3))]
    has_r = np.ones(len(y), bool)
    grid = S.Grid(C=(0.01, 1.0), tfidf_C=(1.0,), tfidf_weight=(0.0, 0.5))
    selection = S.select_recipe(X, y, texts, R=R, has_r=has_r, k=4, seed=0, grid=grid)
    record = selection.as_dict()
    sizes = record["fold_sizes"]
    assert sum(sizes) == len(y) == len(record["folds"]) and max(sizes) - min(sizes) <= 2
    assert {c["rationale"] for c in record["candidates"]} == {"none", "map", "soft"}
    # every (rationale, C) head x (no TF-IDF + one TF-IDF weight) x thresholds
    assert len(record["candidates"]) == 3 * 2 * 2 * len(grid.threshold)
    best = max(c["objective"] for c in record["candidates"])
    assert record["cv"]["objective"] == pytest.approx(best)
    assert record["cv"]["accuracy"] > 0.8
    head = S.refit_head(selection, X, y, texts, R=R, has_r=has_r)
    p = head.predict_proba(X, texts)
    assert ((p >= head.threshold) == y).mean() > 0.8
    # without rationale vectors the family is the label-only ablation
    plain = S.select_recipe(X, y, texts, k=4, seed=0, grid=grid)
    assert {c["rationale"] for c in plain.candidates} == {"none"}


def test_select_recipe_uses_given_folds_and_rejects_bad_ones() -> None:
    """Grouped folds (id blocks, topic clusters) replace the stratified ones and are recorded."""
    X, y, texts = _synthetic()
    grid = S.Grid(C=(0.01, 1.0), tfidf_weight=(0.0,))
    folds = np.arange(len(y)) % 3  # 240 seeded rows, about 40 % harmful: both labels per fold
    selection = S.select_recipe(X, y, texts, k=3, grid=grid, folds=folds, scheme="id-block")
    record = selection.as_dict()
    assert record["folds"] == folds.tolist() and record["scheme"] == "id-block"
    assert "3-fold id-block CV" in record["protocol"]
    assert S.select_recipe(X, y, texts, k=3, grid=grid).as_dict()["scheme"] == "stratified"
    # a fold's held-out rows with one label cannot score macro-F1 honestly
    one_label = np.where(y == 1, 0, np.arange(len(y)) % 2 + 1)
    with pytest.raises(ValueError, match="both labels"):
        S.select_recipe(X, y, texts, k=3, grid=grid, folds=one_label)
    with pytest.raises(ValueError, match="entries"):
        S.select_recipe(X, y, texts, k=3, grid=grid, folds=folds[:-1])
    with pytest.raises(ValueError, match=r"0\.\.2"):
        S.select_recipe(X, y, texts, k=3, grid=grid, folds=folds + 1)


def test_oof_ece_matches_the_harness_metric() -> None:
    """The out-of-fold ECE in the selection record bins as eval/metrics.py's ``ece`` does."""
    from mmagents.eval import metrics as M

    y = np.array([1, 0, 1, 1, 0, 0])
    p = np.array([0.9, 0.9, 0.55, 0.42, 0.2, 0.7])
    labels = ["harmless", "harmful"]
    records = [
        {
            "prediction": labels[int(q >= 0.5)],
            "target": labels[t],
            "confidence": max(q, 1 - q),
        }
        for q, t in zip(p, y, strict=True)
    ]
    assert S._ece(y, p) == pytest.approx(M.ece(records))
    # by hand (confidence, correct): bin 0.9 {(0.9, ok), (0.9, wrong)}, bin 0.5 {(0.55, ok),
    # (0.58, wrong)}, bin 0.8 {(0.8, ok)}, bin 0.7 {(0.7, wrong)}
    expected = (2 * abs(0.5 - 0.9) + 2 * abs(0.5 - 0.565) + abs(1 - 0.8) + abs(0 - 0.7)) / 6
    assert S._ece(y, p) == pytest.approx(expected)


def test_meme_harmful_reports_ece() -> None:
    from mmagents.eval.tasks import load_task

    assert "ece" in [m.key for m in load_task("meme-harmful").metrics]


def test_map_head_folds_into_one_linear_head() -> None:
    X, y, _ = _synthetic(d=6)
    R = np.c_[y * 2.0, X[:, 1:3]]
    fitted = S._fit_head(X, y, R, np.ones(len(y), bool), "map", 1.0, S.DEFAULT_GRID, 0)
    # refit explicitly on [z, zM] and compare the scores of the folded head
    scaler = S._Standardiser.fit(X)
    Z = scaler(X)
    M = S._ridge(Z, R - R.mean(0), S.DEFAULT_GRID.map_alpha)
    P = Z @ M
    w, b = S.fit_logreg(np.hstack([Z, P / (P.std(0) + 1e-6)]), y.astype(float), 1.0)
    explicit = np.hstack([Z, P / (P.std(0) + 1e-6)]) @ w + b
    assert np.allclose(X @ fitted.w + fitted.b, explicit, atol=1e-6)


def test_tfidf_matches_the_hand_formula() -> None:
    vec = Tfidf().fit(["a cat sat", "the cat ran"])
    assert "cat sat" in vec.vocabulary and "cat" in vec.vocabulary and "a" not in vec.vocabulary
    row = vec.transform(["cat cat dog"]).toarray()[0]
    assert row[vec.vocabulary["cat"]] == pytest.approx(1.0)  # the only known term, L2-normalised
    assert vec.transform(["zebra"]).nnz == 0


# -- the trainer, end to end on a tiny encoder --------------------------------------------------
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mmagents.finetune import meme as meme_module  # noqa: E402
from mmagents.finetune import meme_frozen  # noqa: E402
from mmagents.finetune.meme import MemeTrainConfig, train_meme_student  # noqa: E402
from mmagents.finetune.meme_data import read_memes  # noqa: E402
from mmagents.finetune.meme_embed import EmbeddingCache  # noqa: E402


def _rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    rows = []
    for i in range(offset, offset + n):
        harmful = i % 3 == 0
        word = ["kill", "hate", "vermin"][i % 3] if harmful else ["cat", "pizza", "music"][i % 3]
        rows.append(
            {
                "id": f"m{i}",
                "text": f"they {word} us",
                "caption": "a man shouting" if harmful else "a dog in a park",
                "label": "harmful" if harmful else "harmless",
                "rationale": f"The text uses '{word}'. Overall the meme is "
                + ("harmful." if harmful else "harmless."),
            }
        )
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import _tiny_models as tiny

    return tiny.save_bert(tmp_path_factory.mktemp("tiny-bert"), hidden=16, layers=1)


def _cfg(base: Path, tmp: Path, **extra: Any) -> MemeTrainConfig:
    return MemeTrainConfig(
        select="cv",
        base_model=str(base),
        rationale_model=str(base),
        folds=3,
        threads=1,
        progress=False,
        cv_grid=SMALL_GRID,
        **extra,
    )


SMALL_GRID = S.Grid(C=(0.1, 1.0), tfidf_C=(1.0,), tfidf_weight=(0.0,))


@pytest.fixture
def small_grid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A private embedding cache (no test writes to the user's)."""
    monkeypatch.setenv("MMAGENTS_HOME", str(tmp_path / "home"))


def test_val_is_read_only_after_selection_and_refit(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_grid: None
) -> None:
    train = _write(tmp_path / "train.jsonl", _rows(36))
    val = _write(tmp_path / "val.jsonl", _rows(9, offset=100))
    events: list[str] = []
    real_read, real_select = meme_module.read_memes, meme_frozen.select_recipe

    def read(path: Any, **kw: Any) -> Any:
        events.append("read " + Path(path).name)
        return real_read(path, **kw)

    def select(*args: Any, **kw: Any) -> Any:
        events.append("select")
        return real_select(*args, **kw)

    monkeypatch.setattr(meme_module, "read_memes", read)
    monkeypatch.setattr(meme_frozen, "select_recipe", select)
    report = train_meme_student(train, tmp_path / "s", _cfg(tiny_bert, tmp_path), val_path=val)
    assert events == ["read train.jsonl", "select", "read val.jsonl"]
    chosen = report["selection"]["chosen"]
    assert chosen["rationale"] in {"none", "map", "soft"} and "threshold" in chosen
    assert report["selection"]["fold_sizes"] == [12, 12, 12]
    assert report["val"]["n"] == 9 and report["peak_rss_mb"] > 0
    saved = json.loads((tmp_path / "s" / "train_report.json").read_text())
    assert saved["selection"]["chosen"] == chosen


def test_served_student_reproduces_the_refitted_head(
    tiny_bert: Path, tmp_path: Path, small_grid: None
) -> None:
    from mmagents.models.memes.encoder import EncoderStudent

    train = _write(tmp_path / "train.jsonl", _rows(30))
    train_meme_student(train, tmp_path / "s", _cfg(tiny_bert, tmp_path))
    head = json.loads((tmp_path / "s" / "frozen_head.json").read_text())
    examples = read_memes(train)
    X = EmbeddingCache(str(tiny_bert)).pairs(examples).astype(np.float64)
    p = 1 / (
        1 + np.exp(-(head["platt"][0] * (X @ np.array(head["w"]) + head["b"]) + head["platt"][1]))
    )
    served = EncoderStudent(tmp_path / "s").predict_proba(examples)
    assert ((served >= 0.5) == (p >= head["threshold"])).all()


def test_no_rationale_ablation_restricts_the_family(
    tiny_bert: Path, tmp_path: Path, small_grid: None
) -> None:
    train = _write(tmp_path / "train.jsonl", _rows(30))
    report = train_meme_student(
        train, tmp_path / "s", _cfg(tiny_bert, tmp_path, use_rationales=False)
    )
    assert {c["rationale"] for c in report["selection"]["candidates"]} == {"none"}


def test_cv_refuses_fixed_finetuning_options(tiny_bert: Path, tmp_path: Path) -> None:
    train = _write(tmp_path / "train.jsonl", _rows(12))
    with pytest.raises(ConfigError, match="--select none"):
        train_meme_student(train, tmp_path / "s", _cfg(tiny_bert, tmp_path, steps=3))


def test_seeded_val_split_rule(tiny_bert: Path, tmp_path: Path, small_grid: None) -> None:
    source = _write(tmp_path / "all.jsonl", _rows(60))
    report = train_meme_student(source, tmp_path / "s", _cfg(tiny_bert, tmp_path, val_fraction=0.2))
    split = report["split"]
    assert split["rule"] == "stratified_split(records, 0.2, seed=0)"
    train_ids = [e.id for e in read_memes(split["train"])]
    val = read_memes(split["val"])
    assert split["n_val"] == len(val) == 12 and report["val"]["n"] == 12
    assert sum(e.label == "harmful" for e in val) == 4  # 20 % of each label
    assert not set(train_ids) & {e.id for e in val}
    assert len(train_ids) + len(val) == 60 and all(e.rationale is None for e in val)
    # the same seed cuts the same split; another seed another one
    again = train_meme_student(source, tmp_path / "s2", _cfg(tiny_bert, tmp_path, val_fraction=0.2))
    assert [e.id for e in read_memes(again["split"]["val"])] == [e.id for e in val]
    other = meme_module._split_train(
        source, tmp_path / "s3", _cfg(tiny_bert, tmp_path, val_fraction=0.2, split_seed=1)
    )
    assert [e.id for e in read_memes(other["val"])] != [e.id for e in val]
    with pytest.raises(ConfigError, match="not both"):
        train_meme_student(
            source, tmp_path / "s4", _cfg(tiny_bert, tmp_path, val_fraction=0.2), val_path=source
        )


def test_embedding_cache_encodes_each_input_once(tiny_bert: Path, tmp_path: Path) -> None:
    examples = read_memes(_write(tmp_path / "m.jsonl", _rows(10)))
    first = EmbeddingCache(str(tiny_bert), tmp_path / "cache")
    vectors = first.pairs(examples)
    unique = len({(e.text, e.caption) for e in examples})
    assert first.encoded == unique < 10 and vectors.shape == (10, 16)  # duplicates encoded once
    second = EmbeddingCache(str(tiny_bert), tmp_path / "cache")
    assert np.allclose(second.pairs(examples[3:7]), vectors[3:7], atol=1e-6)
    assert second.encoded == 0
    texts = second.texts(["a cat", "a dog", "a cat"])
    assert second.encoded == 2 and np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)


@pytest.mark.skipif(
    not (SHARED / "harmp" / "train.jsonl").is_file(), reason=f"no shared data at {SHARED}"
)
def test_harmp_seeded_split_is_stable() -> None:
    from mmagents.finetune.meme_data import stratified_split

    rest, held = stratified_split(read_memes(SHARED / "harmp" / "train.jsonl"), 0.1, 0)
    assert len(held) == 153 and len(rest) + len(held) == 1531


def test_served_ensemble_applies_tfidf_and_threshold(
    tiny_bert: Path, tmp_path: Path, small_grid: None
) -> None:
    from mmagents.models.memes.encoder import EncoderStudent
    from mmagents.models.memes.tfidf import TfidfPart, meme_text

    train = _write(tmp_path / "train.jsonl", _rows(30))
    grid = S.Grid(rationale=("none",), C=(1.0,), tfidf_C=(3.0,), tfidf_weight=(0.5,))
    cfg = replace(_cfg(tiny_bert, tmp_path), cv_grid=grid)
    report = train_meme_student(train, tmp_path / "s", cfg)
    assert report["selection"]["chosen"]["tfidf_weight"] == 0.5  # the only candidate weight
    head = json.loads((tmp_path / "s" / "frozen_head.json").read_text())
    examples = read_memes(train)
    X = EmbeddingCache(str(tiny_bert)).pairs(examples).astype(np.float64)
    z = head["platt"][0] * (X @ np.array(head["w"]) + head["b"]) + head["platt"][1]
    p_tfidf = TfidfPart(head["tfidf"]).proba([meme_text(e.text, e.caption) for e in examples])
    mixed = 0.5 / (1 + np.exp(-z)) + 0.5 * p_tfidf
    served = EncoderStudent(tmp_path / "s").predict_proba(examples)
    assert ((served >= 0.5) == (mixed >= head["threshold"])).all()
    # the TF-IDF part predicts the words it was fitted on
    assert ((p_tfidf >= 0.5) == np.array([e.label == "harmful" for e in examples])).mean() > 0.9


def test_per_dataset_students_through_the_tool(
    tiny_bert: Path, tmp_path: Path, fake_config: Any, small_grid: None
) -> None:
    """Two datasets' students registered by name; the tool asks the named one and says which."""
    from mmagents.models.memes import load_student
    from mmagents.models.memes.registry import register_student, registered, resolve_student
    from mmagents.tools import build_tool

    folders = {}
    for name in ("harmc", "harmp"):
        data = tmp_path / name
        data.mkdir()
        rows = _rows(30, offset=0 if name == "harmc" else 7)
        if name == "harmp":  # the other dataset's labels flipped: a different student
            rows = [
                {**r, "label": "harmless" if r["label"] == "harmful" else "harmful"} for r in rows
            ]
        train = _write(data / "train.jsonl", rows)
        report = train_meme_student(train, tmp_path / f"s-{name}", _cfg(tiny_bert, tmp_path))
        assert report["dataset"] == name  # from the training file's folder
        meta = json.loads((tmp_path / f"s-{name}" / "student.json").read_text())
        assert meta["dataset"] == name and meta["train_file"] == str(train)
        folders[name] = register_student(tmp_path / f"s-{name}", name, fake_config.home)
    assert set(registered(fake_config.home)) == {"harmc", "harmp"}
    tool = build_tool("classify_meme", fake_config)
    meme = {"text": "they hate us", "caption": "a man shouting"}
    for name in ("harmc", "harmp"):
        result = tool.invoke({**meme, "dataset": name})
        assert result["dataset"] == name and result["label"] in ("harmful", "harmless")
        # the named dataset's own student answered (not the first one the tool was asked)
        own = load_student(folders[name]).classify(meme["text"], meme["caption"])
        assert result["p_harmful"] == round(own.p_harmful, 4)
    with pytest.raises(ConfigError, match=r"no meme student for dataset 'fhm'.*harmc, harmp"):
        tool.invoke({**meme, "dataset": "fhm"})
    # an explicit table entry wins over the registered link
    table = {"fhm": str(tmp_path / "s-harmc")}
    assert resolve_student("fhm", table, fake_config.home) == Path(table["fhm"])
    with pytest.raises(ConfigError, match="plain name"):
        register_student(tmp_path / "s-harmc", "../x", fake_config.home)

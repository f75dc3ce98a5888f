"""Honest recipe selection for the frozen-encoder meme student: k-fold CV on the training split only.

The family (every member sees only frozen-encoder vectors of the meme's (text, caption) pair,
:mod:`mmagents.finetune.meme_embed`):

* **head**: L2-regularised logistic regression on the standardised meme vector, ``C`` from a grid;
* **rationale distillation** (rationales exist at training time only):

  - ``none``: the label alone (the ablation);
  - ``map``: a ridge map ``M`` from the meme vector to the teacher rationale's embedding is fitted
    on the training rows, and the head sees ``[z, zM]``. ``zM`` is the meme's *predicted*
    rationale embedding, so the head's penalty favours directions the teacher's explanations
    vary along. Linear in ``z``, so it folds into one linear head at inference;
  - ``soft``: a teacher head fitted on the rationale embeddings gives cross-fitted soft labels
    (each row's teacher probability comes from a teacher that did not see that row); the student
    head is fitted on ``(1 - λ) · label + λ · teacher probability``;

* **calibration**: Platt scaling (``σ(a·s + b)``) of the head's score, fitted on out-of-fold scores;
* **ensemble**: ``(1 - w) · p_student + w · p_tfidf`` with a word 1–2-gram TF-IDF + logistic
  regression baseline (its ``C`` from a grid, Platt-calibrated the same way), ``w`` from a grid;
* **threshold** on the final probability, from a grid.

Every candidate is scored on the pooled out-of-fold predictions of a seeded stratified k-fold split
of the training rows (or of folds the caller gives, to hold out groups of related rows together:
``bench/meme_shift.py`` compares id-block and topic-cluster folds); the objective is the mean of
accuracy and macro-F1. The chosen recipe is then refitted on all training rows. Nothing here takes
validation data: the val split is read once, after training, by the caller
(``train_meme_student``) for the reported figure.

Only NumPy and SciPy are used (no scikit-learn): logistic regression is L-BFGS on the exact
penalised log-loss, the sklearn convention ``||w||² / 2 + C · Σ loss``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mmagents.models.memes.tfidf import Tfidf

__all__ = [
    "DEFAULT_GRID",
    "FrozenHead",
    "Grid",
    "Selection",
    "Tfidf",
    "fit_logreg",
    "refit_head",
    "score_predictions",
    "select_recipe",
    "stratified_folds",
]


@dataclass(frozen=True)
class Grid:
    """The candidate values searched by CV."""

    rationale: tuple[str, ...] = ("none", "map", "soft")
    # Harm-C train chose the grid's smallest C with both backbones when it started at 3e-4: the
    # grid reaches two steps further down.
    C: tuple[float, ...] = (3e-5, 1e-4, 3e-4, 0.001, 0.003, 0.01, 0.03, 0.1)
    tfidf_C: tuple[float, ...] = (3.0, 10.0, 30.0)
    tfidf_weight: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    threshold: tuple[float, ...] = tuple(round(0.3 + 0.025 * i, 3) for i in range(17))
    #: Ridge penalty of the ``map`` rationale map (standardised features).
    map_alpha: float = 100.0
    #: Weight λ of the teacher's soft label in ``soft``.
    soft_weight: float = 0.5
    #: ``C`` of the rationale-embedding teacher head in ``soft``.
    soft_teacher_C: float = 0.1


DEFAULT_GRID = Grid()


# -- metrics ----------------------------------------------------------------------------------
def score_predictions(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 over the two classes of 0/1 arrays."""
    y = np.asarray(y).astype(int)
    predicted = np.asarray(predicted).astype(int)
    f1s = []
    for cls in (0, 1):
        tp = float(np.sum((predicted == cls) & (y == cls)))
        fp = float(np.sum((predicted == cls) & (y != cls)))
        fn = float(np.sum((predicted != cls) & (y == cls)))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    accuracy = float(np.mean(predicted == y)) if len(y) else 0.0
    return {"accuracy": accuracy, "macro_f1": float(np.mean(f1s))}


def _objective(scores: dict[str, float]) -> float:
    return (scores["accuracy"] + scores["macro_f1"]) / 2


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE of the predicted label's confidence (as eval/metrics.py bins it)."""
    confidence = np.maximum(p, 1 - p)
    correct = (p >= 0.5).astype(int) == y
    edges = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        chosen = edges == b
        if chosen.any():
            total += chosen.mean() * abs(correct[chosen].mean() - confidence[chosen].mean())
    return float(total)


# -- folds --------------------------------------------------------------------------------------
def stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number (0..k-1) of every row: each label's rows shuffled (seeded) and dealt round-robin."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(y), dtype=int)
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        rng.shuffle(rows)
        folds[rows] = np.arange(len(rows)) % k
    return folds


# -- models ------------------------------------------------------------------------------------
def fit_logreg(
    X: Any, t: np.ndarray, C: float, *, max_iter: int = 300, start: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Binary logistic regression on targets ``t`` in [0, 1] (soft labels allowed).

    Minimises ``||w||² / 2 + C · Σ_i CE(t_i, σ(x_i·w + b))`` by L-BFGS (the intercept is not
    penalised). ``X`` may be a dense array or a SciPy sparse matrix; ``start`` warm-starts the
    solver from ``[w, b]`` (a neighbouring ``C``'s solution).

    Returns:
        ``(w, b)``.
    """
    from scipy.optimize import minimize

    d = X.shape[1]
    t = np.asarray(t, dtype=np.float64)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        z = X @ w + b
        # CE(t, σ(z)) = softplus(z) - t·z
        value = float(np.sum(np.logaddexp(0.0, z) - t * z))
        residual = 1.0 / (1.0 + np.exp(-z)) - t
        grad = np.empty(d + 1)
        grad[:d] = C * (X.T @ residual) + w
        grad[d] = C * residual.sum()
        return C * value + 0.5 * float(w @ w), grad

    theta0 = np.zeros(d + 1) if start is None else np.asarray(start, dtype=np.float64)
    result = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return result.x[:d].astype(np.float64), float(result.x[d])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def _platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling ``σ(a·s + b)`` fitted on (out-of-fold) scores."""
    w, b = fit_logreg(scores.reshape(-1, 1), y, C=1e4)
    return float(w[0]), b


# -- the recipe ----------------------------------------------------------------------------------
@dataclass
class _Standardiser:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> _Standardiser:
        return cls(X.mean(0), X.std(0) + 1e-6)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.std


def _ridge(Z: np.ndarray, R: np.ndarray, alpha: float) -> np.ndarray:
    """``argmin_M ||Z M - R||² + α ||M||²`` (Z standardised, R centred by the caller)."""
    gram = Z.T @ Z + alpha * np.eye(Z.shape[1])
    return np.asarray(np.linalg.solve(gram, Z.T @ R))


@dataclass
class _Fitted:
    """A fitted head in raw-vector space: score = x·w + b (``theta``: the solver's solution)."""

    w: np.ndarray
    b: float
    theta: np.ndarray | None = None


def _fit_head(
    X: np.ndarray,
    y: np.ndarray,
    R: np.ndarray | None,
    has_r: np.ndarray | None,
    rationale: str,
    C: float,
    grid: Grid,
    seed: int,
    soft: np.ndarray | None = None,
    start: np.ndarray | None = None,
) -> _Fitted:
    """Fit one head on rows ``X`` (raw vectors) and fold it into raw space.

    ``soft``: the ``soft`` recipe's targets when already computed for these rows.
    """
    scaler = _Standardiser.fit(X)
    Z = scaler(X)
    t = y.astype(np.float64)
    if rationale == "map":
        assert R is not None and has_r is not None
        rows = np.flatnonzero(has_r)
        r_mean = R[rows].mean(0)
        M = _ridge(Z[rows], R[rows] - r_mean, grid.map_alpha)
        P = Z @ M
        p_scale = P.std(0) + 1e-6
        w_all, b = fit_logreg(np.hstack([Z, P / p_scale]), t, C, start=start)
        d = Z.shape[1]
        w_z = w_all[:d] + M @ (w_all[d:] / p_scale)
    else:
        if rationale == "soft":
            assert R is not None and has_r is not None
            t = soft if soft is not None else _soft_targets(R, y, has_r, grid, seed)
        w_all, b = fit_logreg(Z, t, C, start=start)
        w_z = w_all
    w_raw = w_z / scaler.std
    return _Fitted(w_raw, float(b - scaler.mean @ w_raw), np.r_[w_all, b])


def _soft_targets(
    R: np.ndarray, y: np.ndarray, has_r: np.ndarray, grid: Grid, seed: int
) -> np.ndarray:
    """``(1 - λ) y + λ q``: ``q`` a cross-fitted teacher's probability from the rationale vector."""
    t = y.astype(np.float64).copy()
    rows = np.flatnonzero(has_r)
    if len(rows) < 10:
        return t
    inner = stratified_folds(y[rows], 5, seed + 1)
    q = np.empty(len(rows))
    for f in range(5):
        train, held = rows[inner != f], rows[inner == f]
        scaler = _Standardiser.fit(R[train])
        w, b = fit_logreg(scaler(R[train]), y[train].astype(float), grid.soft_teacher_C)
        q[inner == f] = _sigmoid(scaler(R[held]) @ w + b)
    t[rows] = (1 - grid.soft_weight) * t[rows] + grid.soft_weight * q
    return t


@dataclass
class Selection:
    """What CV chose and why (JSON-ready through :meth:`as_dict`)."""

    chosen: dict[str, Any]
    cv: dict[str, float]
    candidates: list[dict[str, Any]]
    folds: list[int]
    k: int
    seed: int
    grid: Grid
    seconds: float
    head_scores: list[dict[str, Any]] = field(default_factory=list)
    #: How the folds were made: ``stratified`` (seeded, :func:`stratified_folds`) or the
    #: caller's name for folds it passed in (``select_recipe(folds=...)``).
    scheme: str = "stratified"

    def as_dict(self) -> dict[str, Any]:
        """The selection record written to ``train_report.json``."""
        return {
            "protocol": (
                f"{self.k}-fold {self.scheme} CV on the training split only (seed {self.seed}); "
                "objective: mean of out-of-fold accuracy and macro-F1; val never read"
            ),
            "scheme": self.scheme,
            "k": self.k,
            "seed": self.seed,
            "fold_sizes": np.bincount(self.folds, minlength=self.k).tolist(),
            "folds": self.folds,
            "grid": asdict(self.grid),
            "chosen": self.chosen,
            "cv": self.cv,
            "heads": self.head_scores,
            "candidates": self.candidates,
            "seconds": round(self.seconds, 1),
        }


def select_recipe(
    X: np.ndarray,
    y: np.ndarray,
    texts: Sequence[str],
    *,
    R: np.ndarray | None = None,
    has_r: np.ndarray | None = None,
    k: int = 5,
    seed: int = 0,
    grid: Grid = DEFAULT_GRID,
    log: Callable[[str], None] | None = None,
    folds: np.ndarray | None = None,
    scheme: str = "given",
) -> Selection:
    """Choose the recipe by k-fold CV over ``grid`` on these (training) rows only.

    Args:
        X: Raw frozen-encoder meme vectors, one row per training example.
        y: 0/1 labels (1 = harmful).
        texts: The memes' text + caption, for the TF-IDF component.
        R: Teacher-rationale embeddings (rows without a rationale are ignored); ``None`` restricts
            the family to ``rationale = none``.
        has_r: Which rows have a rationale.
        k: Folds.
        seed: Seed of the fold assignment (and the soft teacher's inner folds).
        grid: Candidate values.
        log: Receives plain progress lines.
        folds: Fold number (``0..k-1``) of every row, to hold out groups of related rows
            together (say, contiguous id blocks or topic clusters); ``None`` = seeded stratified
            folds. Every fold must hold rows of both labels.
        scheme: The name of the caller's fold scheme, recorded in the selection (with ``folds``).

    Raises:
        ValueError: ``folds`` has the wrong length, numbers outside ``0..k-1``, or a fold whose
            training or held-out rows lack a label.
    """
    y = np.asarray(y).astype(int)
    if folds is None:
        folds, scheme = stratified_folds(y, k, seed), "stratified"
    else:
        folds = np.asarray(folds).astype(int)
        _check_folds(folds, y, k)
    with _one_blas_thread():
        return _select(X, y, texts, R, has_r, folds, scheme, k, seed, grid, log)


def _check_folds(folds: np.ndarray, y: np.ndarray, k: int) -> None:
    if folds.shape != y.shape:
        raise ValueError(f"folds has {len(folds)} entries for {len(y)} rows")
    if folds.min(initial=0) < 0 or folds.max(initial=0) >= k:
        raise ValueError(f"fold numbers must lie in 0..{k - 1}")
    for f in range(k):
        for part, rows in (("held-out", folds == f), ("training", folds != f)):
            if len(np.unique(y[rows])) < 2:
                raise ValueError(f"fold {f}: its {part} rows do not hold both labels")


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """One BLAS thread: these small solves run several times slower spread over busy cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with the scientific stack
        yield
        return
    with threadpool_limits(1):
        yield


def _select(
    X: np.ndarray,
    y: np.ndarray,
    texts: Sequence[str],
    R: np.ndarray | None,
    has_r: np.ndarray | None,
    folds: np.ndarray,
    scheme: str,
    k: int,
    seed: int,
    grid: Grid,
    log: Callable[[str], None] | None,
) -> Selection:
    started = time.perf_counter()
    rationale_options = [r for r in grid.rationale if r == "none" or R is not None]
    head_scores: list[dict[str, Any]] = []
    oof: dict[tuple[str, float], np.ndarray] = {}
    soft: dict[int, np.ndarray] = {}
    if "soft" in rationale_options and R is not None and has_r is not None:
        for f in range(k):  # the teacher's soft labels do not depend on the student's C
            tr = folds != f
            soft[f] = _soft_targets(R[tr], y[tr], has_r[tr], grid, seed)
    for rationale in rationale_options:
        starts: dict[int, np.ndarray | None] = {}
        for C in sorted(grid.C):  # ascending: each fit warm-starts from the previous C's
            scores = np.zeros(len(y))
            for f in range(k):
                tr, held = folds != f, folds == f
                head = _fit_head(
                    X[tr],
                    y[tr],
                    None if R is None else R[tr],
                    None if has_r is None else has_r[tr],
                    rationale,
                    C,
                    grid,
                    seed,
                    soft.get(f),
                    starts.get(f),
                )
                starts[f] = head.theta
                scores[held] = X[held] @ head.w + head.b
            oof[(rationale, C)] = scores
            s = score_predictions(y, scores >= 0)
            head_scores.append({"rationale": rationale, "C": C, **_rounded(s)})
            if log:
                log(
                    f"cv head rationale={rationale} C={C}: {s['accuracy']:.4f} / {s['macro_f1']:.4f}"
                )
    tfidf_oof: dict[float, np.ndarray] = {}
    if any(w > 0 for w in grid.tfidf_weight):
        for C in grid.tfidf_C:
            scores = np.zeros(len(y))
            for f in range(k):
                tr, held = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
                vec = Tfidf().fit([texts[i] for i in tr.tolist()])
                w, b = fit_logreg(
                    vec.transform([texts[i] for i in tr.tolist()]), y[tr].astype(float), C
                )
                scores[held] = vec.transform([texts[i] for i in held.tolist()]) @ w + b
            tfidf_oof[C] = scores
    tfidf_platt = {C: _platt(scores, y) for C, scores in tfidf_oof.items()}
    tfidf_p = {C: _sigmoid(ta * tfidf_oof[C] + tb) for C, (ta, tb) in tfidf_platt.items()}
    candidates: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any]] | None = None
    for (rationale, C), scores in oof.items():
        a, b = _platt(scores, y)
        p_student = _sigmoid(a * scores + b)
        mixes: list[tuple[float, float | None, np.ndarray]] = []
        if 0.0 in grid.tfidf_weight or not tfidf_p:
            mixes.append((0.0, None, p_student))
        for tC, p_t in tfidf_p.items():
            mixes += [(m, tC, (1 - m) * p_student + m * p_t) for m in grid.tfidf_weight if m > 0]
        for weight, t_C, p in mixes:
            for threshold in grid.threshold:
                s = score_predictions(y, p >= threshold)
                row = {
                    "rationale": rationale,
                    "C": C,
                    "tfidf_weight": weight,
                    "tfidf_C": t_C,
                    "threshold": threshold,
                    **_rounded(s),
                    "objective": round(_objective(s), 4),
                }
                candidates.append(row)
                # Ties go to the simpler candidate (seen first: no TF-IDF, threshold nearer 0.5).
                key = _objective(s) - 1e-9 * abs(threshold - 0.5) - 1e-9 * weight
                if best is None or key > best[0] + 1e-12:
                    extra = {"platt": [a, b], "ece_oof": round(_ece(y, p), 4)}
                    if t_C is not None:
                        extra["tfidf_platt"] = list(tfidf_platt[t_C])
                    best = (key, {**row, **extra})
    assert best is not None
    chosen = best[1]
    cv = {k_: chosen[k_] for k_ in ("accuracy", "macro_f1", "objective", "ece_oof")}
    chosen = {k_: v for k_, v in chosen.items() if k_ not in cv}
    return Selection(
        chosen=chosen,
        cv=cv,
        candidates=candidates,
        folds=folds.tolist(),
        k=k,
        seed=seed,
        grid=grid,
        seconds=time.perf_counter() - started,
        head_scores=head_scores,
        scheme=scheme,
    )


def _rounded(scores: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in scores.items()}


@dataclass
class FrozenHead:
    """The chosen recipe refitted on all training rows, in raw-vector space.

    ``p_student = σ(a · (x·w + b) + c)``; with a TF-IDF part, ``p = (1 - weight) · p_student +
    weight · σ(ta · (tfidf(x)·tw + tb) + tc)``; the label is harmful when ``p ≥ threshold``.
    """

    w: np.ndarray
    b: float
    platt: tuple[float, float]
    threshold: float
    tfidf_weight: float = 0.0
    tfidf: Tfidf | None = None
    tfidf_w: np.ndarray | None = None
    tfidf_b: float = 0.0
    tfidf_platt: tuple[float, float] = (1.0, 0.0)

    def student_logit(self, X: np.ndarray) -> np.ndarray:
        """Calibrated logit of harmful from raw meme vectors."""
        a, c = self.platt
        return np.asarray(a * (X @ self.w + self.b) + c)

    def predict_proba(self, X: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """Probability of harmful (before the threshold)."""
        p = _sigmoid(self.student_logit(X))
        if self.tfidf_weight > 0 and self.tfidf is not None and self.tfidf_w is not None:
            ta, tc = self.tfidf_platt
            t_scores = self.tfidf.transform(list(texts)) @ self.tfidf_w + self.tfidf_b
            p = (1 - self.tfidf_weight) * p + self.tfidf_weight * _sigmoid(ta * t_scores + tc)
        return np.asarray(p)


def refit_head(
    selection: Selection,
    X: np.ndarray,
    y: np.ndarray,
    texts: Sequence[str],
    *,
    R: np.ndarray | None = None,
    has_r: np.ndarray | None = None,
) -> FrozenHead:
    """Refit the chosen recipe on all training rows (calibration maps from the CV fit)."""
    chosen = selection.chosen
    y = np.asarray(y).astype(int)
    head = _fit_head(
        X, y, R, has_r, chosen["rationale"], chosen["C"], selection.grid, selection.seed
    )
    a, c = chosen["platt"]
    out = FrozenHead(head.w, head.b, (a, c), float(chosen["threshold"]))
    if chosen["tfidf_weight"] > 0:
        vec = Tfidf().fit(list(texts))
        features = vec.transform(list(texts))
        tw, tb = fit_logreg(features, y.astype(float), chosen["tfidf_C"])
        out.tfidf_weight = float(chosen["tfidf_weight"])
        out.tfidf, out.tfidf_w, out.tfidf_b = vec, tw, tb
        # Its calibration is the one fitted on its out-of-fold scores during selection.
        ta, tc = chosen["tfidf_platt"]
        out.tfidf_platt = (float(ta), float(tc))
    return out

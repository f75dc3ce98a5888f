"""The CV-selected frozen-encoder student (``mmagents finetune meme --select cv``, the default).

Steps: encode every training meme's (text, caption) pair once with the frozen backbone and every
(sanitised) teacher rationale once with the rationale encoder (both cached on disk,
:mod:`mmagents.finetune.meme_embed`); choose head regularisation, rationale-distillation
component, calibration, TF-IDF ensemble weight and threshold by k-fold CV on the training rows
only (:mod:`mmagents.finetune.meme_select`); refit the choice on all of them; write the student.

The folder is an ``encoder`` student (``student.json``, ``encoder/``, ``heads.pt``): the frozen
backbone is copied unchanged and the chosen linear head, its Platt calibration and its threshold
are folded into the classifier weights, so :class:`~mmagents.finetune.meme_encoder.EncoderStudent`
serves it as is. ``frozen_head.json`` keeps the recipe in readable form (and, when CV chose a
TF-IDF ensemble weight above 0, the TF-IDF part, which that class then adds).

The rationale encoder defaults to the packaged MiniLM-L6 whatever the student's backbone: the
teacher space only has to be fixed and informative, and embedding 3000 rationales of 128 tokens
with mpnet costs more than the rest of training on two shared cores (measured: > 20 minutes at a
load average of 10).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmagents.finetune.meme_data import MemeExample, label_index
from mmagents.finetune.meme_embed import EmbeddingCache, default_cache_dir
from mmagents.finetune.meme_select import (
    DEFAULT_GRID,
    FrozenHead,
    Grid,
    refit_head,
    select_recipe,
)
from mmagents.models.memes.student import write_student_meta
from mmagents.models.memes.tfidf import meme_text

__all__ = ["FrozenOptions", "train_frozen_student"]


@dataclass(frozen=True)
class FrozenOptions:
    """Options of the frozen-encoder student.

    Attributes:
        base_model: Backbone folder / hub id (``None`` = packaged MiniLM-L6).
        rationale_model: Encoder of the teacher rationales (``None`` = packaged MiniLM-L6).
        folds: CV folds.
        seed: Seed of the fold assignment.
        max_length: Tokens of the (text, caption) pair (as the encoder student).
        rationale_max_length: Tokens of a rationale.
        cache_dir: Embedding cache folder (``None`` = ``<home>/cache/embeddings``).
        grid: The candidates (:class:`~mmagents.finetune.meme_select.Grid`).
    """

    base_model: str | None = None
    rationale_model: str | None = None
    folds: int = 5
    seed: int = 0
    max_length: int = 64
    rationale_max_length: int = 128
    cache_dir: str | None = None
    grid: Grid = DEFAULT_GRID


def _minilm() -> str:
    from mmagents.finetune.meme_encoder import default_encoder_path

    return default_encoder_path()


def train_frozen_student(
    train: Sequence[MemeExample],
    out: Path,
    opts: FrozenOptions,
    *,
    use_rationales: bool,
    fingerprint: str,
    log: Callable[[str], None] | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Select by CV, refit and save the frozen-encoder student in ``out``.

    Args:
        train: Training examples only (validation data never enters this function).
        out: Output folder.
        opts: Options.
        use_rationales: Allow the rationale components; ``False`` restricts the family to
            ``rationale = none`` (the ablation).
        fingerprint: Identity of the run (written to ``student.json``).
        log: Receives plain progress lines.

    Returns:
        A summary: the selection record, embedding counts and times.
    """
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    base = opts.base_model or _minilm()
    cache = Path(opts.cache_dir) if opts.cache_dir else default_cache_dir()
    encoder = EmbeddingCache(base, cache, log=log)
    X = encoder.pairs(train, opts.max_length).astype(np.float64)
    encoder.release()  # one encoder in memory at a time: the peak stays that of the larger one
    y = np.array([label_index(e.label or "") for e in train])
    R = has_r = None
    rationale_encoder: EmbeddingCache | None = None
    if use_rationales and any(e.rationale for e in train):
        has_r = np.array([bool(e.rationale) for e in train])
        rationale_encoder = EmbeddingCache(opts.rationale_model or _minilm(), cache, log=log)
        vectors = rationale_encoder.texts(
            [e.rationale or "" for e in train if e.rationale], opts.rationale_max_length
        )
        R = np.zeros((len(train), vectors.shape[1]))
        R[has_r] = vectors
        rationale_encoder.release()
    embed_seconds = time.perf_counter() - started
    grid = opts.grid if R is not None else _without_rationales(opts.grid)
    texts = [meme_text(e.text, e.caption) for e in train]
    selection = select_recipe(
        X, y, texts, R=R, has_r=has_r, k=opts.folds, seed=opts.seed, grid=grid, log=log
    )
    head = refit_head(selection, X, y, texts, R=R, has_r=has_r)
    _save(out, base, head, opts, use_rationales, fingerprint)
    return {
        "steps": 0,
        "resumed_from": None,
        "stopped_at": None,
        "train_seconds": round(time.perf_counter() - started, 2),
        "embedding": {
            "backbone": base,
            "rationale_encoder": None if rationale_encoder is None else rationale_encoder.base,
            "encoded_now": encoder.encoded
            + (rationale_encoder.encoded if rationale_encoder else 0),
            "from_cache": (2 if R is not None else 1) * len(train)
            - encoder.encoded
            - (rationale_encoder.encoded if rationale_encoder else 0),
            "seconds": round(embed_seconds, 1),
            "cache_dir": str(cache),
        },
        "selection": selection.as_dict(),
    }


def _without_rationales(grid: Grid) -> Grid:
    return replace(grid, rationale=("none",))


def _save(
    out: Path, base: str, head: FrozenHead, opts: FrozenOptions, use_rationales: bool, fp: str
) -> None:
    """The folder :class:`EncoderStudent` loads, the head folded into its classifier weights."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    target = out / "encoder"
    if target.exists():
        shutil.rmtree(target)
    encoder = AutoModel.from_pretrained(base)
    encoder.save_pretrained(target)
    AutoTokenizer.from_pretrained(base).save_pretrained(target)
    hidden = int(encoder.config.hidden_size)
    a, c = head.platt
    # softmax([logit(t), z]) ≥ 0.5  ⟺  σ(z) ≥ t: the threshold moves into the harmless logit.
    # With a TF-IDF part the threshold applies to the mixture: EncoderStudent applies it there.
    threshold = 0.5 if head.tfidf_weight > 0 else min(max(head.threshold, 1e-6), 1 - 1e-6)
    weight = torch.zeros(2, hidden)
    weight[1] = torch.from_numpy(a * head.w).float()
    bias = torch.tensor([math.log(threshold / (1 - threshold)), a * head.b + c]).float()
    heads = {
        "classifier.weight": weight,
        "classifier.bias": bias,
        "align.weight": torch.zeros(1, hidden),
        "align.bias": torch.zeros(1),
    }
    torch.save(heads, out / "heads.pt")
    record: dict[str, Any] = {
        "threshold": head.threshold,
        "platt": list(head.platt),
        "w": head.w.tolist(),
        "b": head.b,
        "tfidf_weight": head.tfidf_weight,
    }
    if head.tfidf is not None and head.tfidf_w is not None:
        record["tfidf"] = {
            "vocabulary": head.tfidf.vocabulary,
            "idf": head.tfidf.idf.tolist(),
            "w": head.tfidf_w.tolist(),
            "b": head.tfidf_b,
            "platt": list(head.tfidf_platt),
        }
    (out / "frozen_head.json").write_text(json.dumps(record))
    write_student_meta(
        out,
        variant="encoder",
        base_model=base,
        with_rationales=use_rationales,
        options=opts,
        fingerprint=fp,
    )

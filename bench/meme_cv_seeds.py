"""Bench: the rationale ablation of the CV-selected frozen-encoder student over seeds, in one process.

For each backbone and seed it runs exactly what ``mmagents finetune meme --select cv`` runs
(finetune/meme_select.py: k-fold CV on the training split only, refit) twice: with the rationale
family (``none`` / ``map`` / ``soft`` chosen by CV) and label-only (``--no-rationale``); then scores
the refitted head on the validation split, which selection never saw. The seed changes the fold
assignment (hence the chosen C, component, ensemble weight and threshold) and the soft teacher's
inner folds; the frozen features are the same. Embeddings come from the shared on-disk cache
(finetune/meme_embed.py), so only the first run of a backbone pays for encoding. The served
student computes the same scores (tests/test_meme_select.py checks it); this script skips saving
a model folder per run.

    python bench/meme_cv_seeds.py --dataset harmc --backbones minilm mpnet --seeds 0 1 2 \\
        [--data-root ../shared/data/memes] [--out /tmp/meme_seeds.json]

Harm-P / FHM: ``--dataset harmp`` validates on ``stratified_split(train, 0.1, seed=0)`` (the rule
``finetune meme --val-fraction 0.1 --split-seed 0`` uses); FHM has no rationales (label only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "memes"


def load_splits(root: Path, dataset: str) -> tuple[list[Any], list[Any]]:
    """``(train, val)``: Harm-C's shipped val, else the seeded 10 % split of train (rationales of
    train sanitised)."""
    from mmagents.finetune.meme_data import read_memes, sanitise_rationales, stratified_split

    if dataset == "harmc":
        train, val = (
            read_memes(root / "harmc" / "train.jsonl"),
            read_memes(root / "harmc" / "val.jsonl"),
        )
    else:
        train, val = stratified_split(read_memes(root / dataset / "train.jsonl"), 0.1, 0)
    train, _ = sanitise_rationales(train)
    return train, val


def rationale_vectors(train: list[Any]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(R, has_r)``: MiniLM embeddings of the training rationales (zero rows where a meme has
    none) and which rows have one; ``(None, None)`` when no meme has a rationale."""
    from mmagents.finetune.meme_embed import EmbeddingCache, default_cache_dir
    from mmagents.finetune.meme_encoder import default_encoder_path

    if not any(e.rationale for e in train):
        return None, None
    has_r = np.array([bool(e.rationale) for e in train])
    vectors = EmbeddingCache(default_encoder_path(), default_cache_dir()).texts(
        [e.rationale or "" for e in train if e.rationale]
    )
    R = np.zeros((len(train), vectors.shape[1]))
    R[has_r] = vectors
    return R, has_r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--dataset", default="harmc", choices=["harmc", "harmp", "fhm"])
    parser.add_argument("--backbones", nargs="+", default=["minilm", "mpnet"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("/tmp/meme_seeds.json"))
    args = parser.parse_args(argv)

    import torch

    from mmagents.finetune._cli import BACKBONES
    from mmagents.finetune.meme_data import label_index
    from mmagents.finetune.meme_embed import EmbeddingCache, default_cache_dir
    from mmagents.finetune.meme_encoder import default_encoder_path
    from mmagents.finetune.meme_select import refit_head, score_predictions, select_recipe
    from mmagents.models.memes.tfidf import meme_text
    from mmagents.models.zoo import ensure_model

    torch.set_num_threads(1)
    train, val = load_splits(args.data_root, args.dataset)
    y = np.array([label_index(e.label or "") for e in train])
    y_val = np.array([label_index(e.label or "") for e in val])
    texts = [meme_text(e.text, e.caption) for e in train]
    val_texts = [meme_text(e.text, e.caption) for e in val]
    minilm = default_encoder_path()
    R, has_r = rationale_vectors(train)
    rows: list[dict[str, Any]] = []
    for backbone in args.backbones:
        entry = BACKBONES[backbone]
        base = minilm if entry is None else str(ensure_model(entry))
        cache = EmbeddingCache(base, default_cache_dir())
        X = cache.pairs(train).astype(np.float64)
        X_val = cache.pairs(val).astype(np.float64)  # scored after the choice, never selected on
        for seed in args.seeds:
            for rationales in (True, False) if R is not None else (False,):
                started = time.perf_counter()
                selection = select_recipe(
                    X,
                    y,
                    texts,
                    R=R if rationales else None,
                    has_r=has_r if rationales else None,
                    seed=seed,
                )
                head = refit_head(
                    selection,
                    X,
                    y,
                    texts,
                    R=R if rationales else None,
                    has_r=has_r if rationales else None,
                )
                p = head.predict_proba(X_val, val_texts)
                scores = score_predictions(y_val, p >= head.threshold)
                row = {
                    "dataset": args.dataset,
                    "backbone": backbone,
                    "seed": seed,
                    "rationales": rationales,
                    "val_accuracy": round(scores["accuracy"], 4),
                    "val_macro_f1": round(scores["macro_f1"], 4),
                    "n_val": len(val),
                    "cv": selection.cv,
                    "chosen": {k: v for k, v in selection.chosen.items() if "platt" not in k},
                    "seconds": round(time.perf_counter() - started, 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                args.out.write_text(json.dumps(rows, indent=2))
    print()
    print("| backbone | rationales | seeds | val accuracy mean ± std | val macro-F1 mean ± std |")
    print("|---|---|---|---|---|")
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["backbone"], r["rationales"]), []).append(r)
    for (backbone, rationales), group in groups.items():
        acc = [r["val_accuracy"] for r in group]
        f1 = [r["val_macro_f1"] for r in group]
        sd_a = statistics.stdev(acc) if len(acc) > 1 else 0.0
        sd_f = statistics.stdev(f1) if len(f1) > 1 else 0.0
        print(
            f"| {backbone} | {'yes' if rationales else 'no'} | {len(group)} | "
            f"{statistics.mean(acc):.4f} ± {sd_a:.4f} | {statistics.mean(f1):.4f} ± {sd_f:.4f} |"
        )
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Bench: why k-fold CV on Harm-C train does not predict Harm-C val, measured in one run.

Three parts, printed as Markdown tables (and written as JSON to ``--out``):

1. **The split** (no model, seconds): Harm-C's label rate per numeric-id range (the
   ``covid_memes_N`` suffix) in train and in val, and for Harm-C, Harm-P and FHM how often
   id-adjacent training rows share a label against chance. Harm-C's val is not a random draw from
   train's population.
2. **Selection under three fold schemes** (what ``mmagents finetune meme --select cv`` does,
   label-only family unless ``--rationales``): seeded stratified folds (the default), ``id-block``
   folds (training rows sorted by id, cut into contiguous blocks of ``--block-size``, blocks dealt
   to folds in a seeded order) and ``topic-cluster`` folds (seeded spherical k-means of the frozen
   mpnet vectors into ``--clusters`` clusters, clusters dealt to folds), each per backbone: its
   choice, its CV figures and the val figures of the refitted choice. Val is read after each
   selection.
3. **Diagnostic, not a selection** (reads val for every row): the plain logistic-regression head
   per ``C`` (threshold 0.5, no TF-IDF): out-of-fold (stratified) vs val accuracy / macro-F1, to
   show which way val would have pulled the choice.

Backbones: ``minilm`` and ``mpnet`` are the frozen (text, caption) pair vectors of the student
(cached by finetune/meme_embed.py); ``smollm2-prompt`` is an exploratory feature, not a student
backbone: the final hidden state of SmolLM2-135M-Instruct (the packaged GGUF, de-quantised by
transformers) at the last token of a question prompt (meme text, caption, "is this meme harmful or
harmless?", "Answer:"), cached per meme under the embedding cache (about 10 minutes for Harm-C on
two idle cores the first time).

    python bench/meme_shift.py [--dataset harmc] [--backbones minilm mpnet smollm2-prompt] \\
        [--data-root ../shared/data/memes] [--out /tmp/meme_shift.json]

``--dataset harmp`` is the control: its val is a seeded random split of train
(``stratified_split(train, 0.1, seed=0)``, as ``finetune meme --val-fraction 0.1 --split-seed 0``).
No test split is read (none is in ``../shared``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from meme_cv_seeds import load_splits, rationale_vectors  # bench/ is sys.path[0] when run

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "memes"
PROMPT = "Meme text: {text}\nImage: {caption}\nQuestion: is this meme harmful or harmless?\nAnswer:"
C_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def _id_number(meme_id: str) -> int:
    match = re.search(r"(\d+)$", meme_id)
    return int(match.group(1)) if match else -1


def _rate(rows: list[Any]) -> str:
    if not rows:
        return "—"
    harmful = sum(e.label == "harmful" for e in rows)
    return f"{harmful}/{len(rows)} ({harmful / len(rows):.2f})"


def split_profile(root: Path, width: int = 500) -> dict[str, Any]:
    """Part 1: label rate per id range (Harm-C) and id-adjacent label agreement (all three)."""
    from mmagents.finetune.meme_data import read_memes

    train = read_memes(root / "harmc" / "train.jsonl")
    val = read_memes(root / "harmc" / "val.jsonl")
    top = max(_id_number(e.id) for e in [*train, *val])
    ranges = []
    for lo in range(0, top + 1, width):
        inside = [e for e in train if lo <= _id_number(e.id) < lo + width]
        held = [e for e in val if lo <= _id_number(e.id) < lo + width]
        ranges.append({"ids": f"{lo}-{lo + width - 1}", "train": _rate(inside), "val": _rate(held)})
    adjacency = {}
    for name in ("harmc", "harmp", "fhm"):
        path = root / name / "train.jsonl"
        if not path.is_file():
            continue
        rows = sorted(read_memes(path), key=lambda e: _id_number(e.id))
        y = np.array([e.label == "harmful" for e in rows])
        p = float(y.mean())
        adjacency[name] = {
            "adjacent_agree": round(float(np.mean(y[1:] == y[:-1])), 3),
            "chance": round(p * p + (1 - p) ** 2, 3),
            "rows": len(rows),
        }
    return {"ranges": ranges, "adjacency": adjacency}


def prompt_features(examples: list[Any], cache_dir: Path, log: Any = print) -> np.ndarray:
    """SmolLM2-135M's last-token final hidden state after :data:`PROMPT`, cached per prompt."""
    store_file = cache_dir / "smollm2-prompt-last.npz"
    prompts = [
        PROMPT.format(text=e.text.strip()[:400], caption=(e.caption or "").strip())
        for e in examples
    ]
    keys = [hashlib.sha256(p.encode("utf-8")).hexdigest()[:32] for p in prompts]
    store: dict[str, np.ndarray] = {}
    if store_file.is_file():
        with np.load(store_file) as saved:
            store = dict(zip(saved["keys"].tolist(), saved["vectors"], strict=True))
    todo = {k: p for k, p in zip(keys, prompts, strict=True) if k not in store}
    missing = sorted(todo.items(), key=lambda item: len(item[1]))  # short first: less padding
    if missing:
        import torch

        from mmagents.models.memes.generative import load_causal_lm

        model, tokenizer = load_causal_lm("gguf:smollm2")
        model.eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        started = last = time.perf_counter()
        with torch.no_grad():
            for start in range(0, len(missing), 16):
                chunk = missing[start : start + 16]
                batch = tokenizer(
                    [p for _, p in chunk],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=160,
                )
                hidden = model(**batch, output_hidden_states=True).hidden_states[-1][:, -1]
                for (key, _), vector in zip(chunk, hidden.float().numpy(), strict=True):
                    store[key] = vector
                if time.perf_counter() - last > 30:
                    last = time.perf_counter()
                    done = start + len(chunk)
                    log(f"smollm2 prompt features: {done}/{len(missing)} ({last - started:.0f} s)")
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = store_file.with_name(store_file.name + ".tmp.npz")
        np.savez(tmp, keys=np.array(list(store)), vectors=np.stack(list(store.values())))
        tmp.replace(store_file)
    return np.stack([store[k] for k in keys]).astype(np.float64)


def _vectors(backbone: str, rows: list[Any], cache_dir: Path) -> np.ndarray:
    from mmagents.finetune._cli import BACKBONES
    from mmagents.finetune.meme_embed import EmbeddingCache
    from mmagents.finetune.meme_encoder import default_encoder_path
    from mmagents.models.zoo import ensure_model

    if backbone == "smollm2-prompt":
        return prompt_features(rows, cache_dir)
    name = BACKBONES[backbone]
    base = default_encoder_path() if name is None else str(ensure_model(name))
    cache = EmbeddingCache(base, cache_dir, log=print)
    try:
        return cache.pairs(rows, 64).astype(np.float64)
    finally:
        cache.release()


def id_block_folds(ids: list[str], k: int, size: int, seed: int) -> np.ndarray:
    """Contiguous blocks of ``size`` rows in id order, dealt to ``k`` folds in a seeded order."""
    order = np.argsort([_id_number(i) for i in ids], kind="stable")
    blocks = np.arange(len(ids)) // size
    shuffled = np.random.default_rng(seed).permutation(int(blocks.max()) + 1)
    folds = np.empty(len(ids), dtype=int)
    folds[order] = shuffled[blocks] % k
    return folds


def cluster_folds(X: np.ndarray, k: int, clusters: int, seed: int) -> np.ndarray:
    """Seeded spherical k-means of ``X`` into ``clusters``; whole clusters dealt to ``k`` folds."""
    rng = np.random.default_rng(seed)
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    centres = Z[rng.choice(len(Z), clusters, replace=False)]
    for _ in range(30):
        assign = np.argmax(Z @ centres.T, axis=1)
        for j in range(clusters):
            if (assign == j).any():
                centre = Z[assign == j].mean(0)
                centres[j] = centre / np.linalg.norm(centre)
    return np.asarray(rng.permutation(clusters)[assign] % k)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--dataset", default="harmc", choices=["harmc", "harmp"])
    parser.add_argument("--backbones", nargs="+", default=["minilm", "mpnet", "smollm2-prompt"])
    parser.add_argument("--rationales", action="store_true", help="search none/map/soft too")
    parser.add_argument("--block-size", type=int, default=100)
    parser.add_argument("--clusters", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/meme_shift.json"))
    args = parser.parse_args(argv)

    import torch

    from mmagents.finetune.meme_data import label_index
    from mmagents.finetune.meme_embed import default_cache_dir
    from mmagents.finetune.meme_select import (
        _Standardiser,
        fit_logreg,
        refit_head,
        score_predictions,
        select_recipe,
        stratified_folds,
    )
    from mmagents.models.memes.tfidf import meme_text

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    if not (args.data_root / args.dataset / "train.jsonl").is_file():
        print(f"skipped: {args.data_root / args.dataset / 'train.jsonl'} is not here")
        return 0
    report: dict[str, Any] = {"dataset": args.dataset}
    if args.dataset == "harmc":
        profile = split_profile(args.data_root)
        report["split"] = profile
        print("## Harm-C: harmful rate per id range\n\n| ids | train | val |\n|---|---|---|")
        for row in profile["ranges"]:
            print(f"| {row['ids']} | {row['train']} | {row['val']} |")
        print(
            "\n| train split | rows | id-adjacent rows share a label | chance |\n|---|---|---|---|"
        )
        for name, row in profile["adjacency"].items():
            print(f"| {name} | {row['rows']} | {row['adjacent_agree']} | {row['chance']} |")

    train, val = load_splits(args.data_root, args.dataset)
    cache_dir = default_cache_dir()
    y = np.array([label_index(e.label or "") for e in train])
    y_val = np.array([label_index(e.label or "") for e in val])
    texts = [meme_text(e.text, e.caption) for e in train]
    val_texts = [meme_text(e.text, e.caption) for e in val]
    R, has_r = rationale_vectors(train) if args.rationales else (None, None)
    features = {
        b: (_vectors(b, train, cache_dir), _vectors(b, val, cache_dir)) for b in args.backbones
    }
    cluster_source = (
        features["mpnet"][0] if "mpnet" in features else _vectors("mpnet", train, cache_dir)
    )
    schemes = {
        "stratified": None,
        "id-block": id_block_folds([e.id for e in train], 5, args.block_size, args.seed),
        "topic-cluster": cluster_folds(cluster_source, 5, args.clusters, args.seed),
    }
    rows = []
    print(
        "\n## Selection (CV on train) and the val figure of its choice\n\n"
        "| scheme | backbone | chosen (component, C, TF-IDF weight (C), threshold) | CV acc / F1 "
        "| val acc / F1 |\n|---|---|---|---|---|"
    )
    for scheme, folds in schemes.items():
        for backbone, (X, V) in features.items():
            selection = select_recipe(
                X, y, texts, R=R, has_r=has_r, k=5, seed=args.seed, folds=folds, scheme=scheme
            )
            head = refit_head(selection, X, y, texts, R=R, has_r=has_r)
            chosen = selection.chosen
            p = head.predict_proba(V, val_texts)
            scores = score_predictions(y_val, p >= chosen["threshold"])
            rows.append(
                {"scheme": scheme, "backbone": backbone, "chosen": chosen, "cv": selection.cv}
                | {"val": scores}
            )
            print(
                f"| {scheme} | {backbone} | {chosen['rationale']}, {chosen['C']}, "
                f"{chosen['tfidf_weight']} ({chosen['tfidf_C']}), {chosen['threshold']} | "
                f"{selection.cv['accuracy']:.4f} / {selection.cv['macro_f1']:.4f} | "
                f"{scores['accuracy']:.4f} / {scores['macro_f1']:.4f} |",
                flush=True,
            )
    report["selection"] = rows

    print(
        "\n## Diagnostic (val read for every row; not a selection): plain LR head per C\n\n"
        "| backbone | C | CV acc / F1 (stratified) | val acc / F1 |\n|---|---|---|---|"
    )
    folds = stratified_folds(y, 5, args.seed)
    diagnostic = []
    for backbone, (X, V) in features.items():
        for C in C_GRID:
            scores_oof = np.zeros(len(y))
            for f in range(5):
                fit, held = folds != f, folds == f
                scaler = _Standardiser.fit(X[fit])
                w, b = fit_logreg(scaler(X[fit]), y[fit].astype(float), C)
                scores_oof[held] = scaler(X[held]) @ w + b
            scaler = _Standardiser.fit(X)
            w, b = fit_logreg(scaler(X), y.astype(float), C)
            cv = score_predictions(y, scores_oof >= 0)
            on_val = score_predictions(y_val, scaler(V) @ w + b >= 0)
            diagnostic.append({"backbone": backbone, "C": C, "cv": cv, "val": on_val})
            print(
                f"| {backbone} | {C} | {cv['accuracy']:.4f} / {cv['macro_f1']:.4f} | "
                f"{on_val['accuracy']:.4f} / {on_val['macro_f1']:.4f} |",
                flush=True,
            )
    report["diagnostic"] = diagnostic
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

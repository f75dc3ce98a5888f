"""Bench: Mr.Harm rationale distillation vs its no-rationale ablation vs TF-IDF + logistic regression.

For Harm-C (train → val) and FHM (a seeded, stratified 10 % validation split cut from train), it
trains and scores, side by side:

* ``tfidf``: word 1–2-gram TF-IDF + logistic regression (C chosen by 5-fold CV on train only);
* ``student+rationales``: the encoder student (MiniLM-L6) distilled from the teacher rationales;
* ``student``: the same student, same data and seed, without rationales (the ablation);
* optionally (``--generative-steps N``) a short run of the generative LoRA student (SmolLM2-135M
  from the packaged GGUF), timed per step and extrapolated to one epoch per stage.

Every model is trained in its own process (the students through ``mmagents finetune meme``, the
exact command users run), so each row's peak memory (``getrusage`` maxrss of that process) and
time are its own. FHM has no teacher rationales in the shared data: only the label-only student
and TF-IDF run there. Writes ``<out>/results.json`` and prints a Markdown table.

    python bench/meme_distill.py [--data-root ../shared/data/memes] [--out /tmp/meme_bench]
        [--datasets harmc fhm] [--epochs 2] [--generative-steps 8] [--threads auto]

``--cv`` benches the CV-selected frozen-encoder students instead (``finetune meme --select cv``,
finetune/meme_select.py): for each dataset, backbone and seed, the student with the rationale
family and its label-only ablation (``--no-rationale``), each in its own process, reporting val
accuracy / macro-F1, the CV figures and choices, training time and peak RSS per backbone, and the
seed table (mean ± standard deviation over seeds). Harm-P and FHM are validated on a seeded
stratified 10 % of train (``--val-fraction 0.1 --split-seed 0``); FHM has no rationales.

    python bench/meme_distill.py --cv --datasets harmc harmp --backbones minilm mpnet \
        --seeds 0 1 2 [--cache-dir DIR] [--out /tmp/meme_cv]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "memes"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tfidf_child(train: str, val: str, queue: Any) -> None:
    """Fit TF-IDF + LR in a fresh process; put its row on ``queue``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    from mmagents.finetune.meme_data import read_memes

    started = time.perf_counter()
    train_set, val_set = read_memes(train), read_memes(val)

    def inputs(memes: list[Any]) -> list[str]:
        return [f"{m.text} {m.caption}" for m in memes]

    pipeline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(max_iter=2000),
    )
    search = GridSearchCV(pipeline, {"logisticregression__C": [0.3, 1, 3, 10, 30]}, cv=5)
    search.fit(inputs(train_set), [m.label for m in train_set])
    seconds = time.perf_counter() - started
    predicted = search.predict(inputs(val_set))
    gold = [m.label for m in val_set]
    queue.put(
        {
            "accuracy": accuracy_score(gold, predicted),
            "macro_f1": f1_score(gold, predicted, average="macro"),
            "train_seconds": round(seconds, 1),
            "peak_rss_mb": round(_peak_mb(), 1),
            "note": f"C={search.best_params_['logisticregression__C']} (5-fold CV on train)",
        }
    )


def tfidf_row(train: Path, val: Path) -> dict[str, Any]:
    """The TF-IDF + LR baseline, fitted in its own process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_tfidf_child, args=(str(train), str(val), queue))
    child.start()
    row: dict[str, Any] = queue.get()
    child.join()
    return {"model": "TF-IDF + LR", **row}


def student_row(
    train: Path, val: Path, out: Path, *, rationales: bool, extra: list[str]
) -> dict[str, Any]:
    """Train a student with ``mmagents finetune meme`` in a subprocess and read its report."""
    command = [sys.executable, "-m", "mmagents.cli", "finetune", "meme", "--train", str(train)]
    command += ["--val", str(val), "--out", str(out), "--json", "--no-progress", *extra]
    if not rationales:
        command.append("--no-rationale")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    variant = report["variant"]
    name = f"{variant} student" + (" + rationales" if rationales else " (no rationales)")
    return {
        "model": name,
        "accuracy": report["val"]["accuracy"],
        "macro_f1": report["val"]["macro_f1"],
        "train_seconds": report.get("train_seconds"),
        "peak_rss_mb": report["peak_rss_mb"],
        "note": f"steps {report['stages']}, batch {report['batch_size']}, "
        f"threads {report['threads']}",
        "report": str(out / "train_report.json"),
    }


def generative_timing(
    train: Path, val: Path, out: Path, steps: int, extra: list[str]
) -> dict[str, Any]:
    """A short generative run: seconds per step of each stage, extrapolated to one epoch each."""
    row = student_row(
        train,
        val,
        out,
        rationales=True,
        extra=["--variant", "generative", "--steps", str(steps), *extra],
    )
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    per_stage: dict[str, float] = {}
    for stage in ("rationale", "label"):
        times = [r["seconds"] for r in log if r["stage"] == stage]
        if len(times) >= 2:
            per_stage[stage] = (times[-1] - times[0]) / (len(times) - 1)
    report = json.loads((out / "train_report.json").read_text())
    n_rat, n_all, batch = report["n_with_rationale"], report["n_train"], report["batch_size"]
    epoch_seconds = per_stage.get("rationale", 0) * (n_rat // batch) + per_stage.get("label", 0) * (
        n_all // batch
    )
    row["model"] = f"generative LoRA student, {steps} steps/stage (timing only)"
    row["note"] = (
        f"s/step: rationale {per_stage.get('rationale', float('nan')):.1f}, label "
        f"{per_stage.get('label', float('nan')):.1f}; 1 epoch per stage ≈ {epoch_seconds / 60:.0f} min "
        f"here (extrapolated); val eval {report['val']['seconds']:.0f} s"
    )
    row["extrapolated_epoch_seconds"] = round(epoch_seconds)
    return row


def prepare_fhm(
    data_root: Path, out: Path, fraction: float = 0.1, seed: int = 0
) -> tuple[Path, Path]:
    """FHM's validation split: a seeded, stratified ``fraction`` of train (test sets are held out)."""
    from mmagents.finetune.meme_data import read_memes, stratified_split, write_memes

    rest, held = stratified_split(read_memes(data_root / "fhm" / "train.jsonl"), fraction, seed)
    folder = out / "fhm_split"
    return write_memes(folder / "train.jsonl", rest), write_memes(folder / "val.jsonl", held)


def cv_row(
    dataset: str,
    data_root: Path,
    out: Path,
    *,
    backbone: str,
    seed: int,
    rationales: bool,
    extra: list[str],
) -> dict[str, Any]:
    """One ``finetune meme --select cv`` run in its own process; its report as a row."""
    command = [sys.executable, "-m", "mmagents.cli", "finetune", "meme", "--select", "cv"]
    command += ["--train", str(data_root / dataset / "train.jsonl")]
    if dataset == "harmc":
        command += ["--val", str(data_root / "harmc" / "val.jsonl")]
    else:
        command += ["--val-fraction", "0.1", "--split-seed", "0"]
    command += ["--out", str(out), "--backbone", backbone, "--seed", str(seed), "--json"]
    command += ["--no-progress", *extra]
    if not rationales:
        command.append("--no-rationale")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    selection = report["selection"]
    return {
        "dataset": dataset,
        "backbone": backbone,
        "seed": seed,
        "rationales": rationales,
        "accuracy": report["val"]["accuracy"],
        "macro_f1": report["val"]["macro_f1"],
        "n_val": report["val"]["n"],
        "cv": selection["cv"],
        "chosen": selection["chosen"],
        "train_seconds": report["train_seconds"],
        "embedding": report["embedding"],
        "selection_seconds": selection["seconds"],
        "process_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": report["peak_rss_mb"],
        "report": str(out / "train_report.json"),
    }


def _sd(values: list[float]) -> float:
    import statistics

    return statistics.stdev(values) if len(values) > 1 else 0.0


def cv_markdown(rows: list[dict[str, Any]]) -> str:
    """Per-run rows, then the seed table (mean ± std over seeds)."""
    import statistics

    lines = [
        "| dataset | backbone | rationales | seed | val acc | val macro-F1 | CV acc | CV F1 "
        "| chosen (rationale, C, TF-IDF w, threshold) | train s | encoded now | peak RSS MiB |"
    ]
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["chosen"]
        lines.append(
            f"| {r['dataset']} | {r['backbone']} | {'yes' if r['rationales'] else 'no'} | "
            f"{r['seed']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['cv']['accuracy']:.4f} "
            f"| {r['cv']['macro_f1']:.4f} | {c['rationale']}, {c['C']}, {c['tfidf_weight']}, "
            f"{c['threshold']} | {r['train_seconds']:.0f} | {r['embedding']['encoded_now']} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "| dataset | backbone | rationales | seeds | val acc mean ± std | "
        "val macro-F1 mean ± std |",
        "|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["backbone"], r["rationales"]), []).append(r)
    for (dataset, backbone, rationales), group in groups.items():
        acc = [r["accuracy"] for r in group]
        f1 = [r["macro_f1"] for r in group]
        lines.append(
            f"| {dataset} | {backbone} | {'yes' if rationales else 'no'} | {len(group)} | "
            f"{statistics.mean(acc):.4f} ± {_sd(acc):.4f} | {statistics.mean(f1):.4f} ± {_sd(f1):.4f} |"
        )
    return "\n".join(lines)


def run_cv(args: argparse.Namespace) -> int:
    """``--cv``: the CV-selected students, every dataset x backbone x seed x (rationales, none)."""
    extra = ["--threads", str(args.threads)]
    if args.cache_dir:
        extra += ["--cache-dir", str(args.cache_dir)]
    rows: list[dict[str, Any]] = []
    results = args.out / "cv_results.json"
    args.out.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets:
        for backbone in args.backbones:
            for seed in args.seeds:
                for rationales in (True, False) if dataset != "fhm" else (False,):
                    name = f"{dataset}-{backbone}-s{seed}-{'r' if rationales else 'n'}"
                    row = cv_row(
                        dataset,
                        args.data_root,
                        args.out / name,
                        backbone=backbone,
                        seed=seed,
                        rationales=rationales,
                        extra=extra,
                    )
                    rows.append(row)
                    print(
                        json.dumps(
                            {
                                k: row[k]
                                for k in (
                                    "dataset",
                                    "backbone",
                                    "seed",
                                    "rationales",
                                    "accuracy",
                                    "macro_f1",
                                    "train_seconds",
                                    "peak_rss_mb",
                                )
                            }
                        ),
                        flush=True,
                    )
                    results.write_text(json.dumps(rows, indent=2))
    print(cv_markdown(rows))
    print(f"results: {results}")
    return 0


def markdown(results: dict[str, list[dict[str, Any]]]) -> str:
    """The results as one Markdown table per dataset."""
    lines = []
    for dataset, rows in results.items():
        lines += [f"### {dataset}", ""]
        lines += ["| model | accuracy | macro-F1 | train time (s) | peak RSS (MiB) | notes |"]
        lines += ["|---|---|---|---|---|---|"]
        for r in rows:
            seconds = "—" if r.get("train_seconds") is None else f"{r['train_seconds']:.0f}"
            lines.append(
                f"| {r['model']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {seconds} | "
                f"{r['peak_rss_mb']:.0f} | {r.get('note', '')} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "meme_bench")
    parser.add_argument(
        "--datasets", nargs="+", default=["harmc", "fhm"], choices=["harmc", "harmp", "fhm"]
    )
    parser.add_argument("--cv", action="store_true", help="bench the CV-selected students")
    parser.add_argument("--backbones", nargs="+", default=["minilm", "mpnet"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cache-dir", type=Path, help="--cv: embedding cache")
    parser.add_argument("--epochs", type=float, help="epochs per stage (default: the variant's)")
    parser.add_argument("--threads", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generative-steps", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)
    if args.cv:
        return run_cv(args)

    # The fixed finetuning recipes (the CV-selected students are --cv's).
    extra = ["--select", "none", "--threads", str(args.threads), "--seed", str(args.seed)]
    if args.epochs is not None:
        extra += ["--epochs", str(args.epochs)]
    results: dict[str, list[dict[str, Any]]] = {}
    for dataset in args.datasets:
        if dataset == "harmc":
            train, val = (
                args.data_root / "harmc" / "train.jsonl",
                args.data_root / "harmc" / "val.jsonl",
            )
        else:
            train, val = prepare_fhm(args.data_root, args.out)
        folder = args.out / dataset
        rows = [tfidf_row(train, val)]
        if dataset == "harmc":  # FHM ships no teacher rationales
            rows.append(
                student_row(train, val, folder / "rationales", rationales=True, extra=extra)
            )
        rows.append(student_row(train, val, folder / "labels", rationales=False, extra=extra))
        if args.generative_steps and dataset == "harmc":
            rows.append(
                generative_timing(train, val, folder / "generative", args.generative_steps, extra)
            )
        results[dataset] = rows
        print(markdown({dataset: rows}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

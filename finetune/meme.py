"""Train and evaluate a Mr.Harm meme student: ``train_meme_student(train, out, MemeTrainConfig())``.

This is what ``mmagents finetune meme`` runs: read the training JSONL and its teacher rationales
(the records' ``rationale`` field, or ``rationale_file`` in the published ``{id: text}`` format),
strip the sentences that state the label out of them, train the chosen variant (resuming from the
output folder's checkpoints), and score the student on the validation file. The output folder then
holds a loadable student (``student.json`` …) and ``train_report.json``: data sizes, stage steps,
training time, peak memory and validation accuracy / macro-F1.

The no-rationale ablation (``use_rationales=False``) uses the same examples, seed and label steps;
it only skips the rationale stage and the alignment loss.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mmagents.errors import ConfigError
from mmagents.finetune._train import configure_threads, peak_rss_mb
from mmagents.finetune.meme_data import (
    MemeExample,
    fingerprint,
    load_rationale_file,
    read_memes,
    sanitise_rationales,
    stratified_split,
    write_memes,
)

__all__ = ["VARIANTS", "MemeTrainConfig", "evaluate_student", "train_meme_student"]

VARIANTS = ("encoder", "generative", "t5-clip")

#: Per-variant defaults: stage lengths in epochs, batch size, learning rate.
_DEFAULTS: dict[str, dict[str, Any]] = {
    # The encoder learns from rationales jointly with the label (contrastive alignment): a separate
    # alignment-only first stage did not help it on Harm-C (docs/results/meme.md).
    "encoder": {"rationale_epochs": 0.0, "label_epochs": 2.0, "batch_size": 16, "lr": 5e-5},
    "generative": {"rationale_epochs": 1.0, "label_epochs": 1.0, "batch_size": 8, "lr": 2e-4},
    # The paper's student (finetune/meme_t5clip.py): Mr.Harm's README recipe.
    "t5-clip": {"rationale_epochs": 10.0, "label_epochs": 30.0, "batch_size": 32, "lr": 5e-5},
}


@dataclass(frozen=True)
class MemeTrainConfig:
    """Options of one training run (``None`` = the variant's default).

    Attributes:
        variant: ``encoder`` (MiniLM, CPU-fast), ``generative`` (LoRA causal LM) or ``t5-clip``
            (the paper's Flan-T5 + frozen CLIP student, from images).
        use_rationales: Distil the teacher's rationales; ``False`` is the ablation.
        steps: Steps of each stage that runs (overrides ``epochs``).
        epochs: Epochs of each stage that runs.
        rationale_epochs: Epochs of the rationale-only first stage (0 skips it; default: 1 for
            the generative variant, 0 for the encoder, which aligns jointly with the label).
        batch_size: Examples per step.
        lr: Learning rate.
        seed: Seed of everything random.
        checkpoint_every: Save a checkpoint every N steps.
        threads: Torch CPU threads (``"auto"``: 1 on an oversubscribed machine, else all cores).
        base_model: Base model (encoder folder / hub id; for the generative variant also a
            ``.gguf`` file); ``None`` = the packaged offline model.
        rationale_file: Teacher rationales ``{id: text}`` overriding the records' field.
        keep_label_statements: Keep the teacher's sentences that state the label (default: cut).
        train_layers: Encoder variant: top layers trained (0 = all; default 2).
        align_weight: Encoder variant: weight of the alignment loss in the label stage.
        align_loss: Encoder variant: ``contrastive`` (default) or ``cosine``.
        lora_r: Generative variant: LoRA rank.
        clip_model: t5-clip variant: the frozen CLIP vision model (default OpenAI ViT-B/32).
        augment: t5-clip variant: RandAugment the training images (the reference's vit_randaug).
        progress: Show progress bars.
        select: ``cv`` (encoder variant): the frozen-encoder recipe family of
            :mod:`mmagents.finetune.meme_select`, every choice made by k-fold CV on the training
            split only; ``none``: the fixed recipe given by the other options (finetuned top
            layers for the encoder). ``mmagents finetune meme`` defaults to ``cv`` for the encoder.
        folds: CV folds (``select = "cv"``).
        rationale_model: Encoder of the teacher rationales (``select = "cv"``; default MiniLM-L6).
        val_fraction: Cut a validation split off the training file by
            :func:`~mmagents.finetune.meme_data.stratified_split` (per label, seeded by
            ``split_seed``); both halves are written to ``out/split/`` (no ``val_path`` then).
        split_seed: Seed of that split.
        cv_grid: The candidates of ``select = "cv"`` (a :class:`~mmagents.finetune.meme_select.Grid`;
            ``None`` = its default).
        dataset: The dataset's name recorded in ``student.json`` (default: the training file's
            folder name, e.g. ``harmc`` for ``…/harmc/train.jsonl``).
        cache_dir: Embedding cache of ``select = "cv"`` (``None`` = ``<home>/cache/embeddings``).
    """

    variant: str = "encoder"
    use_rationales: bool = True
    steps: int | None = None
    epochs: float | None = None
    rationale_epochs: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    checkpoint_every: int = 50
    threads: int | str = "auto"
    base_model: str | None = None
    rationale_file: str | None = None
    keep_label_statements: bool = False
    train_layers: int | None = None
    align_weight: float = 1.0
    align_loss: str = "contrastive"
    lora_r: int = 16
    clip_model: str | None = None
    augment: bool = True
    progress: bool = True
    select: str = "none"
    folds: int = 5
    rationale_model: str | None = None
    val_fraction: float | None = None
    split_seed: int = 0
    cv_grid: Any = None
    cache_dir: str | None = None
    dataset: str | None = None


def _load_training_data(path: str | Path, cfg: MemeTrainConfig) -> tuple[list[MemeExample], int]:
    rationales = load_rationale_file(cfg.rationale_file) if cfg.rationale_file else None
    train = read_memes(path, rationales=rationales)
    dropped = 0
    if cfg.use_rationales:
        if not any(e.rationale for e in train):
            raise ConfigError(
                f"{path} has no teacher rationales: pass --rationales FILE (write one with "
                "`mmagents run meme --data FILE --rationales-out FILE`) or train with --no-rationale"
            )
        if not cfg.keep_label_statements:
            train, dropped = sanitise_rationales(train)
    else:
        train = [MemeExample(e.id, e.text, e.caption, e.label, image=e.image) for e in train]
    return train, dropped


def _stage_steps(cfg: MemeTrainConfig, n_all: int, n_rationale: int) -> tuple[int, int, int]:
    """``(rationale_steps, label_steps, batch_size)`` from steps / epochs / defaults."""
    defaults = _DEFAULTS[cfg.variant]
    batch = cfg.batch_size or int(defaults["batch_size"])
    r_epochs = cfg.rationale_epochs
    if r_epochs is None:
        r_epochs = float(defaults["rationale_epochs"])
        if r_epochs > 0 and cfg.epochs is not None:
            r_epochs = cfg.epochs
    has_stage = cfg.use_rationales and n_rationale > 0 and r_epochs > 0

    def steps_for(epochs: float, n: int) -> int:
        return max(1, math.ceil(epochs * max(1, n // min(batch, n))))

    if cfg.steps is not None:
        return (cfg.steps if has_stage else 0), cfg.steps, batch
    l_epochs = cfg.epochs if cfg.epochs is not None else float(defaults["label_epochs"])
    return (steps_for(r_epochs, n_rationale) if has_stage else 0), steps_for(l_epochs, n_all), batch


def train_meme_student(
    train_path: str | Path,
    out: str | Path,
    cfg: MemeTrainConfig,
    *,
    val_path: str | Path | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train a meme student into ``out`` and evaluate it on ``val_path``.

    Args:
        train_path: Training JSONL (id, text, caption, label[, rationale]).
        out: Output folder (checkpoints, the student, ``train_report.json``); a rerun with the
            same options resumes from its last checkpoint.
        cfg: Training options.
        val_path: Validation JSONL, scored after training (rationales there are never read).
        stop_after: Stop after this global step without saving the student (simulated kill).

    Returns:
        The training report (also written to ``out/train_report.json``).

    Raises:
        ConfigError: unknown variant, or rationales asked for but absent.
        DatasetError: unreadable data.
    """
    if cfg.variant not in VARIANTS:
        raise ConfigError(f"unknown student variant {cfg.variant!r}; choose from {VARIANTS}")
    folder = Path(out).expanduser()
    source = str(train_path)
    dataset = cfg.dataset or Path(source).expanduser().resolve().parent.name
    split = None
    if cfg.val_fraction is not None:
        if val_path is not None:
            raise ConfigError("give a validation file or a validation fraction, not both")
        split = _split_train(train_path, folder, cfg)
        train_path, val_path = split["train"], split["val"]
    if cfg.select == "cv":
        selected = _train_selected(train_path, folder, cfg, val_path, split)
        return _with_dataset(folder, selected, dataset, source)
    if cfg.select != "none":
        raise ConfigError(f"unknown selection {cfg.select!r}; choose cv or none")
    train, dropped = _load_training_data(train_path, cfg)
    val = read_memes(val_path) if val_path else []
    threads = configure_threads(cfg.threads)
    n_rationale = sum(1 for e in train if e.rationale)
    rationale_steps, label_steps, batch = _stage_steps(cfg, len(train), n_rationale)
    options, trainer = _variant_options(cfg, rationale_steps, label_steps, batch)
    run_id = fingerprint(train, with_rationales=cfg.use_rationales)
    run_id += ":" + json.dumps(asdict(options), sort_keys=True, default=str)
    started = time.perf_counter()
    previous = _finished_run(folder, run_id)
    if previous is not None:
        keep = ("steps", "resumed_from", "train_seconds", "stopped_at")
        summary = {**{k: previous.get(k) for k in keep}, "already_trained": True}
    else:
        summary = trainer(
            train,
            folder,
            options,
            use_rationales=cfg.use_rationales,
            fingerprint=run_id,
            checkpoint_every=cfg.checkpoint_every,
            progress=cfg.progress,
            stop_after=stop_after,
            **({"val": val} if cfg.variant == "t5-clip" else {}),
        )
    report: dict[str, Any] = {
        "variant": cfg.variant,
        "use_rationales": cfg.use_rationales,
        "train_file": str(train_path),
        "n_train": len(train),
        "n_with_rationale": n_rationale,
        "rationales_dropped_as_all_label": dropped,
        "stages": {"rationale": rationale_steps, "label": label_steps},
        "batch_size": batch,
        "seed": cfg.seed,
        "threads": threads,
        **summary,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    if summary.get("stopped_at") is None and val:
        report["val"] = _validate(folder, val, val_path)
    # A finished run is not trained again: its report keeps the peak of the process that trained.
    peak = previous.get("peak_rss_mb") if previous else None
    report["peak_rss_mb"] = peak if peak is not None else round(peak_rss_mb(), 1)
    (folder / "train_report.json").write_text(json.dumps(report, indent=2))
    return _with_dataset(folder, report, dataset, source)


def _split_train(path: str | Path, folder: Path, cfg: MemeTrainConfig) -> dict[str, Any]:
    """Cut a seeded stratified validation split off ``path``; write both halves to ``out/split``.

    The rule: :func:`stratified_split` with ``cfg.val_fraction`` and ``cfg.split_seed`` on the
    records in file order (each label's indices shuffled by ``random.Random(seed)``, the first
    ``round(n_label · fraction)`` held out). The val half is written without rationales.
    """
    rationales = load_rationale_file(cfg.rationale_file) if cfg.rationale_file else None
    rest, held = stratified_split(
        read_memes(path, rationales=rationales), cfg.val_fraction or 0.0, cfg.split_seed
    )
    train_file = write_memes(folder / "split" / "train.jsonl", rest)
    val_file = write_memes(
        folder / "split" / "val.jsonl", [replace(e, rationale=None) for e in held]
    )
    return {
        "source": str(path),
        "rule": f"stratified_split(records, {cfg.val_fraction}, seed={cfg.split_seed})",
        "train": str(train_file),
        "val": str(val_file),
        "n_train": len(rest),
        "n_val": len(held),
    }


def _train_selected(
    train_path: str | Path,
    folder: Path,
    cfg: MemeTrainConfig,
    val_path: str | Path | None,
    split: dict[str, Any] | None,
) -> dict[str, Any]:
    """``select = "cv"``: choose by CV on the training split, refit, then read val once."""
    from mmagents.finetune.meme_frozen import FrozenOptions, train_frozen_student

    if cfg.variant != "encoder":
        raise ConfigError(
            f"--select cv is implemented for the encoder variant; train the {cfg.variant} "
            "variant with --select none"
        )
    fixed = {"steps": cfg.steps, "epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size}
    fixed |= {"train_layers": cfg.train_layers, "rationale_epochs": cfg.rationale_epochs}
    given = sorted(k for k, v in fixed.items() if v is not None)
    if given:
        raise ConfigError(
            f"{', '.join(given)} set the fixed finetuning recipe: add --select none "
            "(with --select cv every choice is made by cross-validation)"
        )
    train, dropped = _load_training_data(train_path, cfg)
    threads = configure_threads(cfg.threads)
    options = FrozenOptions(
        base_model=cfg.base_model,
        rationale_model=cfg.rationale_model,
        folds=cfg.folds,
        seed=cfg.seed,
        cache_dir=cfg.cache_dir,
        **({"grid": cfg.cv_grid} if cfg.cv_grid is not None else {}),
    )
    run_id = fingerprint(train, with_rationales=cfg.use_rationales)
    run_id += ":" + json.dumps(asdict(options), sort_keys=True, default=str)
    started = time.perf_counter()
    previous = _finished_run(folder, run_id)
    if previous is not None and "selection" in previous:
        summary = {k: previous[k] for k in ("train_seconds", "embedding", "selection")}
        summary["already_trained"] = True
    else:
        log = (lambda line: print(line, flush=True)) if cfg.progress else None
        summary = train_frozen_student(
            train, folder, options, use_rationales=cfg.use_rationales, fingerprint=run_id, log=log
        )
        summary.pop("steps", None)
    report: dict[str, Any] = {
        "variant": cfg.variant,
        "select": "cv",
        "use_rationales": cfg.use_rationales,
        "train_file": str(train_path),
        "n_train": len(train),
        "n_with_rationale": sum(1 for e in train if e.rationale),
        "rationales_dropped_as_all_label": dropped,
        "stages": {"rationale": 0, "label": 0},
        "seed": cfg.seed,
        "threads": threads,
        **({"split": split} if split else {}),
        **summary,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    if val_path:
        # Read once, after the choice and the refit: selection never sees it.
        report["val"] = _validate(folder, read_memes(val_path), val_path)
    peak = previous.get("peak_rss_mb") if previous else None
    report["peak_rss_mb"] = peak if peak is not None else round(peak_rss_mb(), 1)
    (folder / "train_report.json").write_text(json.dumps(report, indent=2))
    return report


def _with_dataset(
    folder: Path, report: dict[str, Any], dataset: str, source: str
) -> dict[str, Any]:
    """Record the dataset the student was trained on (in ``student.json`` and the report)."""
    if (folder / "student.json").is_file() and report.get("stopped_at") is None:
        from mmagents.models.memes.registry import record_dataset

        record_dataset(folder, dataset, source)
        report["dataset"] = dataset
        (folder / "train_report.json").write_text(json.dumps(report, indent=2))
    return report


def _finished_run(folder: Path, run_id: str) -> dict[str, Any] | None:
    """The report of the finished run ``run_id`` in ``folder`` ({} if lost), else ``None``."""
    try:
        if json.loads((folder / "student.json").read_text()).get("fingerprint") != run_id:
            return None
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    try:
        report: dict[str, Any] = json.loads((folder / "train_report.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        report = {}
    return report


def _validate(folder: Path, val: Sequence[MemeExample], path: Any) -> dict[str, Any]:
    from mmagents.models.memes.student import MemeStudent

    started = time.perf_counter()
    scores = evaluate_student(MemeStudent(folder), val)
    return {"file": str(path), **scores, "seconds": round(time.perf_counter() - started, 2)}


def _variant_options(
    cfg: MemeTrainConfig, rationale_steps: int, label_steps: int, batch: int
) -> tuple[Any, Any]:
    lr = cfg.lr or float(_DEFAULTS[cfg.variant]["lr"])
    if cfg.variant == "encoder":
        from mmagents.finetune.meme_encoder import EncoderOptions, train_encoder_student

        return EncoderOptions(
            base_model=cfg.base_model,
            rationale_steps=rationale_steps,
            label_steps=label_steps,
            batch_size=batch,
            lr=lr,
            align_weight=cfg.align_weight,
            align_loss=cfg.align_loss,
            train_layers=2 if cfg.train_layers is None else cfg.train_layers,
            seed=cfg.seed,
        ), train_encoder_student
    if cfg.variant == "t5-clip":
        from mmagents.finetune.meme_t5clip import DEFAULT_CLIP, DEFAULT_T5, T5ClipOptions
        from mmagents.finetune.meme_t5clip import train_t5clip_student as trainer

        return T5ClipOptions(
            t5_model=cfg.base_model or DEFAULT_T5,
            clip_model=cfg.clip_model or DEFAULT_CLIP,
            rationale_steps=rationale_steps,
            label_steps=label_steps,
            batch_size=batch,
            lr=lr,
            augment=cfg.augment,
            seed=cfg.seed,
        ), trainer
    from mmagents.finetune.meme_generative import (
        DEFAULT_BASE,
        GenerativeOptions,
        train_generative_student,
    )

    return GenerativeOptions(
        base_model=cfg.base_model or DEFAULT_BASE,
        rationale_steps=rationale_steps,
        label_steps=label_steps,
        batch_size=batch,
        lr=lr,
        lora_r=cfg.lora_r,
        seed=cfg.seed,
    ), train_generative_student


def evaluate_student(student: Any, examples: Sequence[MemeExample]) -> dict[str, Any]:
    """Accuracy and macro-F1 (over harmful / harmless) of ``student`` on labelled examples."""
    from mmagents.eval.metrics import accuracy, macro_f1

    predictions = student.classify_many(examples)
    records = [
        {"prediction": p.label, "target": e.label}
        for p, e in zip(predictions, examples, strict=True)
    ]
    return {
        "n": len(records),
        "accuracy": accuracy(records),
        "macro_f1": macro_f1(records, labels=["harmful", "harmless"]),
    }

"""``mmagents finetune meme``: train a Mr.Harm meme student (resumable) and report its scores."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from mmagents.errors import ConfigError

__all__ = ["register"]


def register(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Add the ``finetune`` sub-commands (one per distillation recipe)."""
    sub = parser.add_subparsers(dest="recipe", metavar="RECIPE")
    meme = sub.add_parser(
        "meme",
        help="distil teacher rationales into a harmful-meme student (Mr.Harm)",
        description=(
            "Train a harmful-meme student from JSONL (id, text, caption, label, rationale). "
            "Rerunning the same command resumes from the last checkpoint in --out."
        ),
    )
    meme.add_argument("--train", required=True, metavar="FILE", help="training JSONL")
    meme.add_argument("--val", metavar="FILE", help="validation JSONL, scored after training")
    meme.add_argument("--out", required=True, metavar="DIR", help="output folder (the student)")
    meme.add_argument(
        "--variant",
        choices=["encoder", "generative", "t5-clip"],
        default="encoder",
        help="encoder: MiniLM + label head + rationale alignment (CPU minutes, default); "
        "generative: two-stage LoRA on a causal LM (SmolLM2-135M GGUF by default; GPU advised); "
        "t5-clip: the paper's Flan-T5 + frozen CLIP student, from the meme images (GPU advised)",
    )
    meme.add_argument(
        "--no-rationale",
        dest="use_rationales",
        action="store_false",
        help="ablation: train on labels only (same data, same seed)",
    )
    meme.add_argument("--rationales", metavar="FILE", help="teacher rationales JSON {id: text}")
    meme.add_argument(
        "--keep-label-statements",
        action="store_true",
        help="keep teacher sentences that state the label (default: cut them out)",
    )
    length = meme.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimisation steps of each stage")
    length.add_argument("--epochs", type=float, help="epochs of each stage")
    meme.add_argument(
        "--rationale-epochs",
        type=float,
        help="epochs of the rationale-only first stage (0 skips it; default: generative 1, "
        "encoder 0: it aligns with the rationales jointly with the label)",
    )
    meme.add_argument("--batch-size", type=int)
    meme.add_argument("--lr", type=float, help="learning rate")
    meme.add_argument("--seed", type=int, default=0)
    meme.add_argument("--checkpoint-every", type=int, default=50, metavar="N")
    meme.add_argument(
        "--base-model",
        metavar="ID_OR_PATH",
        help="base model: encoder folder/hub id, or for --variant generative a .gguf/folder/hub id",
    )
    meme.add_argument(
        "--backbone",
        choices=sorted(BACKBONES),
        help="encoder: a packaged backbone from the model zoo (sha256-checked; not with --base-model)",
    )
    meme.add_argument(
        "--train-layers", type=int, help="encoder: top layers trained (0 = all; default 2)"
    )
    meme.add_argument(
        "--align-loss",
        choices=["contrastive", "cosine"],
        default="contrastive",
        help="encoder: rationale-alignment loss",
    )
    meme.add_argument("--align-weight", type=float, default=1.0, help="encoder: alignment weight")
    meme.add_argument("--lora-r", type=int, default=16, help="generative: LoRA rank")
    meme.add_argument(
        "--clip-model", metavar="ID_OR_PATH", help="t5-clip: frozen CLIP vision model"
    )
    meme.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="t5-clip: no RandAugment on training images",
    )
    meme.add_argument(
        "--select",
        choices=["cv", "none"],
        help="cv (encoder default): every choice of the frozen-encoder recipe (head C, rationale "
        "component, calibration, TF-IDF ensemble weight, threshold) by k-fold CV on the training "
        "split only, written to train_report.json; none: the fixed recipe of the other options "
        "(encoder: finetuned top layers; the generative and t5-clip variants' only mode). "
        "Default: cv for the encoder, unless --steps/--epochs/--lr/--batch-size/--train-layers/"
        "--rationale-epochs is given (those set the fixed recipe)",
    )
    meme.add_argument("--folds", type=int, default=5, help="CV folds (--select cv)")
    meme.add_argument(
        "--rationale-backbone",
        choices=sorted(BACKBONES),
        default="minilm",
        help="--select cv: encoder of the teacher rationales (default minilm, the cheap one)",
    )
    meme.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        help="cut a seeded stratified validation split (fraction F per label) off --train; "
        "both halves are written to OUT/split/ (instead of --val)",
    )
    meme.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="--select cv: embedding cache (default <home>/cache/embeddings)",
    )
    meme.add_argument(
        "--dataset",
        metavar="NAME",
        help="the dataset's name, recorded in student.json (default: the --train file's folder "
        "name, e.g. harmc)",
    )
    meme.add_argument(
        "--register",
        action="store_true",
        help="link the trained student as <home>/students/NAME: `classify_meme` then takes "
        "dataset=NAME",
    )
    meme.add_argument("--split-seed", type=int, default=0, help="seed of --val-fraction's split")
    meme.add_argument("--threads", default="auto", help="torch CPU threads (default: auto)")
    meme.add_argument("--no-progress", dest="progress", action="store_false")
    meme.add_argument("--json", action="store_true", help="print the training report as JSON")
    meme.set_defaults(func=_run_meme)


#: Encoder backbones by name -> model-zoo entry (``None`` = the packaged MiniLM-L6 default).
BACKBONES: dict[str, str | None] = {"minilm": None, "mpnet": "all-mpnet-base-v2"}


def _base_model(args: argparse.Namespace) -> str | None:
    """The base model to train: ``--base-model`` as given, or ``--backbone`` assembled by the zoo.

    Raises:
        ConfigError: both ``--backbone`` and ``--base-model`` given.
    """
    backbone = getattr(args, "backbone", None)
    if backbone is None:
        return args.base_model
    if args.base_model is not None:
        raise ConfigError("give --backbone or --base-model, not both")
    entry = BACKBONES[backbone]
    if entry is None:
        return None
    from mmagents.models.zoo import ensure_model

    # The zoo concatenates the part packages and checks the sha256 before the folder is used.
    return str(ensure_model(entry))


#: Options of the fixed finetuning recipe: giving one implies ``--select none``.
FIXED_RECIPE = ("steps", "epochs", "lr", "batch_size", "train_layers", "rationale_epochs")


def _default_select(args: argparse.Namespace) -> str:
    """``cv`` for the encoder unless a fixed-recipe option is given; ``none`` for the others."""
    if args.variant != "encoder":
        return "none"
    return "none" if any(getattr(args, k, None) is not None for k in FIXED_RECIPE) else "cv"


def _rationale_model(args: argparse.Namespace) -> str | None:
    entry = BACKBONES[getattr(args, "rationale_backbone", None) or "minilm"]
    if entry is None:
        return None
    from mmagents.models.zoo import ensure_model

    return str(ensure_model(entry))


def _run_meme(args: argparse.Namespace) -> int:
    from mmagents.finetune.meme import MemeTrainConfig, train_meme_student

    select = args.select or _default_select(args)
    cfg = MemeTrainConfig(
        select=select,
        folds=args.folds,
        rationale_model=_rationale_model(args) if select == "cv" else None,
        val_fraction=args.val_fraction,
        split_seed=args.split_seed,
        cache_dir=args.cache_dir,
        dataset=args.dataset,
        variant=args.variant,
        use_rationales=args.use_rationales,
        steps=args.steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        threads=args.threads,
        base_model=_base_model(args),
        rationale_file=args.rationales,
        keep_label_statements=args.keep_label_statements,
        rationale_epochs=args.rationale_epochs,
        train_layers=args.train_layers,
        align_loss=args.align_loss,
        align_weight=args.align_weight,
        lora_r=args.lora_r,
        clip_model=args.clip_model,
        augment=args.augment,
        progress=args.progress,
    )
    report = train_meme_student(args.train, args.out, cfg, val_path=args.val)
    if args.register and report.get("dataset"):
        from mmagents.models.memes.registry import register_student

        link = register_student(args.out, report["dataset"])
        report["registered"] = str(link)
        print(f"registered as {link}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if report.get("select") == "cv":
        _print_selected(report, args.out)
        return 0
    stages = report["stages"]
    verb = "already trained:" if report.get("already_trained") else "trained"
    print(
        f"{verb} {report['variant']} student in {args.out} "
        f"({'with' if report['use_rationales'] else 'without'} rationales; "
        f"steps: rationale {stages['rationale']}, label {stages['label']}; "
        f"{report.get('train_seconds') or 0:.0f} s, peak {report['peak_rss_mb']:.0f} MiB)"
    )
    if report.get("resumed_from") is not None:
        print(f"resumed from step {report['resumed_from']}")
    if "val" in report:
        val = report["val"]
        print(
            f"val: accuracy {val['accuracy']:.4f}  macro-F1 {val['macro_f1']:.4f}  (n={val['n']})"
        )
    return 0


def _print_selected(report: dict[str, Any], out: str) -> None:
    selection = report["selection"]
    chosen, cv = selection["chosen"], selection["cv"]
    verb = "already trained:" if report.get("already_trained") else "trained"
    print(
        f"{verb} frozen-encoder student in {out} ({report['n_train']} memes, "
        f"{report['train_seconds']:.0f} s, peak {report['peak_rss_mb']:.0f} MiB)"
    )
    print(
        f"chosen by {selection['k']}-fold CV on train: rationale={chosen['rationale']} "
        f"C={chosen['C']} tfidf_weight={chosen['tfidf_weight']} threshold={chosen['threshold']} "
        f"(CV accuracy {cv['accuracy']:.4f}, macro-F1 {cv['macro_f1']:.4f})"
    )
    if "split" in report:
        print(f"split: {report['split']['rule']} -> {report['split']['val']}")
    if "val" in report:
        val = report["val"]
        print(
            f"val: accuracy {val['accuracy']:.4f}  macro-F1 {val['macro_f1']:.4f}  (n={val['n']})"
        )

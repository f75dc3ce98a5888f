"""The paper's meme student (Mr.Harm): Flan-T5 reading frozen CLIP patch features (variant ``t5-clip``).

::

    image ─ CLIP vision (frozen) ─ patch features ───────┬──────────────┬──────────┐
                                                         ▼              ▼          ▼
    text ─ T5 encoder block 1 ─(+ cross-attn)─ … ─ block L ─(+ cross-attn)─ (+ cross-attn) ─ T5 decoder
    stage 1 target "Output: {rationale}"       stage 2 target "The answer is: {label}"

After every encoder block, and once more on the encoder's output, the text states attend to the
image's CLIP patch states (one head, queries from the text, keys and values from the image, both
projected to half the T5 width) and the result is added to them, as in the reference's
``T5ForMultimodalGeneration`` (src/modules/t5_model.py). The recipe (``models/memes/_mrharm_paper.py``)
is this variant's default: stage 1 writes the rationale for 10 epochs, stage 2 starts from stage
1's kept checkpoint and learns the label for 30 epochs; lr 5e-5, batch 32, AdamW with weight decay
0.01 (none on biases and norms), linear decay after 10 % warm-up; inputs and rationales truncated to
40 T5 tokens. After each epoch the model is validated: stage 1 keeps the lowest validation loss
on the validation rationales (the last epoch when the validation data has none), stage 2 the
highest validation accuracy of the generated answer. Training images get RandAugment(2, 9) as the
reference's ``vit_randaug`` transform (``augment=False`` turns it off; the features are then
computed once per image).

Models load with ``from_pretrained`` (hub ids or local folders): ``t5_model`` (default
google/flan-t5-base), ``clip_model`` (default openai/clip-vit-base-patch32). The network, its
loader, the image features and the trained student (``T5ClipStudent``) live in
:mod:`mmagents.models.memes.t5clip` (inference); this module trains them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mmagents.errors import ConfigError
from mmagents.finetune._train import seed_everything
from mmagents.finetune.meme_data import MemeExample
from mmagents.models.memes import _mrharm_paper as recipe
from mmagents.models.memes.student import write_student_meta
from mmagents.models.memes.t5clip import (
    DEFAULT_CLIP,
    DEFAULT_T5,
    FusedT5,
    MemeImages,
    T5ClipOptions,
    generated_labels,
    load_t5_clip,
    make_batch,
)

__all__ = ["DEFAULT_CLIP", "DEFAULT_T5", "T5ClipOptions", "options_dict", "train_t5clip_student"]


def _optimiser(model: FusedT5, opts: T5ClipOptions, steps: int) -> tuple[Any, Any]:
    import torch
    from transformers import get_linear_schedule_with_warmup

    no_decay = ("bias", "layer_norm", "LayerNorm", "norm")
    named = model.named_parameters()
    groups = [
        {
            "params": [p for n, p in named if not any(k in n for k in no_decay)],
            "weight_decay": opts.weight_decay,
        },
        {"params": [p for n, p in named if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimiser = torch.optim.AdamW(groups, lr=opts.lr, eps=1e-8, betas=(0.9, 0.999))
    schedule = get_linear_schedule_with_warmup(optimiser, int(steps * opts.warmup), steps)
    return optimiser, schedule


def _snapshot(model: FusedT5) -> dict[str, Any]:
    return {
        k: v.detach().clone()
        for k, v in {
            **model.t5.state_dict(),
            **{"fusion." + k: v for k, v in model.fusion.state_dict().items()},
        }.items()
    }


def _restore(model: FusedT5, state: dict[str, Any]) -> None:
    model.t5.load_state_dict({k: v for k, v in state.items() if not k.startswith("fusion.")})
    model.fusion.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("fusion.")})


def _val_loss(
    model: FusedT5,
    images: MemeImages,
    tokenizer: Any,
    val: Sequence[MemeExample],
    opts: T5ClipOptions,
) -> float:
    import torch

    model.train(False)
    losses = []
    with torch.no_grad():
        for start in range(0, len(val), opts.batch_size):
            chunk = val[start : start + opts.batch_size]
            batch = make_batch(
                tokenizer,
                chunk,
                [recipe.rationale_target(e.rationale or "") for e in chunk],
                opts,
                opts.max_text_tokens,
            )
            losses.append(
                float(model.loss(images.features(chunk, train=False), batch)) * len(chunk)
            )
    return sum(losses) / len(val)


def _run_stage(
    name: str,
    model: FusedT5,
    images: MemeImages,
    tokenizer: Any,
    train: Sequence[MemeExample],
    val: Sequence[MemeExample],
    steps: int,
    opts: T5ClipOptions,
    progress: bool,
) -> dict[str, Any]:
    """Train one stage for ``steps`` steps, validating after every epoch; keep the best epoch."""
    from mmagents.finetune._train import batch_indices

    is_rationale = name == "rationale"
    stage = recipe.STAGES[0 if is_rationale else 1]
    targets = [
        recipe.rationale_target(e.rationale or "")
        if is_rationale
        else recipe.label_target(e.label or "")
        for e in train
    ]
    limit = opts.max_text_tokens if is_rationale else opts.max_label_tokens
    per_epoch = max(1, len(train) // min(opts.batch_size, len(train)))
    optimiser, schedule = _optimiser(model, opts, steps)
    checked = [e for e in val if e.rationale] if is_rationale else [e for e in val if e.label]
    history: list[float] = []
    states: dict[int, dict[str, Any]] = {}
    for step in range(steps):
        model.train(True)
        picked = batch_indices(len(train), opts.batch_size, opts.seed, step)
        chosen = [train[i] for i in picked]
        batch = make_batch(tokenizer, chosen, [targets[i] for i in picked], opts, limit)
        loss = model.loss(images.features(chosen, train=True), batch)
        loss.backward()
        optimiser.step()
        schedule.step()
        optimiser.zero_grad()
        end_of_epoch = (step + 1) % per_epoch == 0 or step + 1 == steps
        if end_of_epoch and checked:
            if is_rationale:
                history.append(_val_loss(model, images, tokenizer, checked, opts))
            else:
                predicted = generated_labels(model, images, tokenizer, checked, opts)
                history.append(
                    float(np.mean([p == e.label for p, e in zip(predicted, checked, strict=True)]))
                )
            states[len(history) - 1] = _snapshot(model)
            if progress:
                print(f"t5-clip {name} epoch {len(history)}: {stage.monitor} {history[-1]:.4f}")
    kept = "last"
    if history:
        best = recipe.best_epoch(history, stage.mode)
        _restore(model, states[best])
        kept = f"epoch {best + 1} ({stage.monitor} {history[best]:.4f})"
    return {"steps": steps, "epochs_validated": len(history), stage.monitor: history, "kept": kept}


def train_t5clip_student(
    train: Sequence[MemeExample],
    out: Path,
    options: T5ClipOptions,
    *,
    use_rationales: bool,
    fingerprint: str,
    checkpoint_every: int = 0,
    progress: bool = True,
    stop_after: int | None = None,
    val: Sequence[MemeExample] = (),
) -> dict[str, Any]:
    """Train the two stages on ``train`` (validating on ``val``) and save the student in ``out``.

    The run is not checkpointed mid-way (``checkpoint_every`` and ``stop_after`` are accepted for
    the common trainer signature and ignored): a rerun of an unfinished run starts again.

    Raises:
        ConfigError: a training or validation meme without an image, or unloadable models.
    """
    import torch

    lacking = [e.id for e in [*train, *val] if not e.image]
    if lacking:
        raise ConfigError(
            f"t5-clip reads the meme images; {len(lacking)} meme(s) have none (first: {lacking[0]}): "
            "convert with `mmagents eval convert mrharm … --set images=DIR`"
        )
    seed_everything(options.seed)
    started = time.perf_counter()
    tokenizer, t5, clip, processor = load_t5_clip(options.t5_model, options.clip_model)
    model = FusedT5(t5, clip, processor)
    images = MemeImages(model, options.augment, options.seed)
    report: dict[str, Any] = {}
    with_rationale = [e for e in train if e.rationale]
    if use_rationales and with_rationale and options.rationale_steps > 0:
        report["rationale"] = _run_stage(
            "rationale",
            model,
            images,
            tokenizer,
            with_rationale,
            val,
            options.rationale_steps,
            options,
            progress,
        )
    report["label"] = _run_stage(
        "label", model, images, tokenizer, list(train), val, options.label_steps, options, progress
    )
    out.mkdir(parents=True, exist_ok=True)
    model.t5.save_pretrained(out / "t5")
    tokenizer.save_pretrained(out / "t5")
    torch.save(model.fusion.state_dict(), out / "fusion.pt")
    write_student_meta(
        out,
        variant="t5-clip",
        base_model=options.t5_model,
        with_rationales=use_rationales,
        options=options,
        fingerprint=fingerprint,
    )
    return {
        "steps": options.rationale_steps + options.label_steps,
        "resumed_from": None,
        "stopped_at": None,
        "train_seconds": round(time.perf_counter() - started, 2),
        "t5_clip": report,
    }


def options_dict(options: T5ClipOptions) -> dict[str, Any]:
    """JSON-ready options (for reports)."""
    return asdict(options)

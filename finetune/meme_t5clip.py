"""The paper's meme student (Mr.Harm): Flan-T5 reading frozen CLIP patch features (variant ``t5-clip``).

::

    image ─ CLIP vision (frozen) ─ patch features ───────┬──────────────┬──────────┐
                                                         ▼              ▼          ▼
    text ─ T5 encoder block 1 ─(+ cross-attn)─ … ─ block L ─(+ cross-attn)─ (+ cross-attn) ─ T5 decoder
    stage 1 target "Output: {rationale}"       stage 2 target "The answer is: {label}"

After every encoder block, and once more on the encoder's output, the text states attend to the
image's CLIP patch states (one head, queries from the text, keys and values from the image, both
projected to half the T5 width) and the result is added to them, as in the reference's
``T5ForMultimodalGeneration`` (src/modules/t5_model.py). The recipe (``finetune/_mrharm_paper.py``)
is this variant's default: stage 1 writes the rationale for 10 epochs, stage 2 starts from stage
1's kept checkpoint and learns the label for 30 epochs; lr 5e-5, batch 32, AdamW with weight decay
0.01 (none on biases and norms), linear decay after 10 % warm-up; inputs and rationales truncated to
40 T5 tokens. After each epoch the model is validated: stage 1 keeps the lowest validation loss
on the validation rationales (the last epoch when the validation data has none), stage 2 the
highest validation accuracy of the generated answer. Training images get RandAugment(2, 9) as the
reference's ``vit_randaug`` transform (``augment=False`` turns it off; the features are then
computed once per image).

Models load with ``from_pretrained`` (hub ids or local folders): ``t5_model`` (default
google/flan-t5-base), ``clip_model`` (default openai/clip-vit-base-patch32). The student folder
holds ``t5/`` (weights + tokenizer), ``fusion.pt`` (the cross-attention layers) and
``student.json`` naming the CLIP model, which stays frozen and is not copied.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmagents.errors import ConfigError
from mmagents.finetune import _mrharm_paper as recipe
from mmagents.finetune._train import seed_everything
from mmagents.finetune.meme_data import LABELS, MemeExample
from mmagents.finetune.student import write_student_meta

__all__ = ["T5ClipOptions", "T5ClipStudent", "train_t5clip_student"]

DEFAULT_T5 = "google/flan-t5-base"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"


@dataclass(frozen=True)
class T5ClipOptions:
    """Options of the ``t5-clip`` student (defaults: the reference recipe)."""

    t5_model: str = DEFAULT_T5
    clip_model: str = DEFAULT_CLIP
    rationale_steps: int = 0
    label_steps: int = 0
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1
    max_text_tokens: int = recipe.MAX_TEXT_TOKENS
    max_label_tokens: int = recipe.MAX_LABEL_TOKENS
    augment: bool = True
    seed: int = 0


def _fusion_class() -> Any:
    import torch
    from torch import nn

    class CrossAttentionFusion(nn.Module):  # type: ignore[misc]
        """Text states attend to image states; returns the update added to the text states."""

        def __init__(self, image_dim: int, text_dim: int) -> None:
            super().__init__()
            inner = text_dim // 2
            self.query = nn.Linear(text_dim, inner)
            self.key = nn.Linear(image_dim, inner)
            self.value = copy.deepcopy(self.key)  # same start as the keys, trained apart
            self.out = nn.Linear(inner, text_dim)
            self.scale = math.sqrt(inner)

        def forward(self, image: Any, text: Any) -> Any:
            weights = torch.softmax(
                self.query(text) @ self.key(image).transpose(-1, -2) / self.scale, -1
            )
            return self.out(weights @ self.value(image))

    return CrossAttentionFusion


class _Model:
    """T5 with the fusion layers hooked into its encoder, and the frozen CLIP vision tower."""

    def __init__(self, t5: Any, clip: Any, processor: Any, fusion: Any | None = None) -> None:
        from torch import nn

        self.t5, self.clip, self.processor = t5, clip, processor
        clip.requires_grad_(False).eval()
        image_dim, text_dim = clip.config.hidden_size, t5.config.d_model
        fuse = _fusion_class()
        layers = t5.config.num_layers
        self.fusion = fusion or nn.ModuleList(fuse(image_dim, text_dim) for _ in range(layers + 1))
        self._image: Any = None
        for i, block in enumerate(t5.encoder.block):
            block.register_forward_hook(self._after_block(i))
        t5.encoder.register_forward_hook(self._after_encoder)

    def _after_block(self, i: int) -> Callable[..., Any]:
        def hook(module: Any, args: Any, output: Any) -> Any:
            hidden = output[0]
            return (hidden + self.fusion[i](self._image, hidden), *output[1:])

        return hook

    def _after_encoder(self, module: Any, args: Any, output: Any) -> Any:
        output.last_hidden_state = output.last_hidden_state + self.fusion[-1](
            self._image, output.last_hidden_state
        )
        return output

    def parameters(self) -> list[Any]:
        return [*self.t5.parameters(), *self.fusion.parameters()]

    def named_parameters(self) -> list[tuple[str, Any]]:
        return [
            *self.t5.named_parameters(),
            *(("fusion." + n, p) for n, p in self.fusion.named_parameters()),
        ]

    def train(self, mode: bool = True) -> None:
        self.t5.train(mode)
        self.fusion.train(mode)

    def image_features(self, images: Sequence[Any]) -> Any:
        import torch

        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return self.clip(pixel_values=pixels).last_hidden_state

    def loss(self, features: Any, batch: dict[str, Any]) -> Any:
        self._image = features
        return self.t5(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        ).loss

    def sequence_logprob(self, features: Any, batch: dict[str, Any]) -> Any:
        """Summed log-probability of each row's target tokens."""
        import torch

        self._image = features
        logits = self.t5(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        ).logits
        logp = torch.log_softmax(logits.float(), -1)
        targets = batch["labels"]
        picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (picked * (targets != -100)).sum(-1)

    def generate(self, features: Any, batch: dict[str, Any], max_new_tokens: int) -> Any:
        self._image = features
        return self.t5.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )


def _load(t5_path: str, clip_path: str) -> tuple[Any, Any, Any, Any]:
    from transformers import (
        AutoImageProcessor,
        AutoTokenizer,
        CLIPVisionModel,
        T5ForConditionalGeneration,
    )

    try:
        tokenizer = AutoTokenizer.from_pretrained(t5_path)
        t5 = T5ForConditionalGeneration.from_pretrained(t5_path)
        clip = CLIPVisionModel.from_pretrained(clip_path)
        processor = AutoImageProcessor.from_pretrained(clip_path)
    except OSError as exc:
        raise ConfigError(f"t5-clip: cannot load {t5_path!r} / {clip_path!r}: {exc}") from None
    return tokenizer, t5, clip, processor


class _Images:
    """Meme images: opened once, features cached when not augmented."""

    def __init__(self, model: _Model, augment: bool, seed: int) -> None:
        self.model, self.augment = model, augment
        self._cache: dict[str, Any] = {}
        self._opened: dict[str, Any] = {}
        if augment:
            import torch
            from torchvision.transforms import RandAugment

            torch.manual_seed(seed)
            self._randaugment = RandAugment(num_ops=2, magnitude=9)

    def _open(self, path: str) -> Any:
        from PIL import Image

        if path not in self._opened:
            with Image.open(path) as image:
                self._opened[path] = image.convert("RGB")
        return self._opened[path]

    def features(self, examples: Sequence[MemeExample], *, train: bool) -> Any:
        import torch

        if train and self.augment:
            return self.model.image_features(
                [self._randaugment(self._open(e.image or "")) for e in examples]
            )
        missing = [e.image for e in examples if e.image not in self._cache]
        if missing:
            feats = self.model.image_features([self._open(p or "") for p in missing])
            self._cache.update(zip(missing, feats, strict=True))  # type: ignore[arg-type]
        return torch.stack([self._cache[e.image] for e in examples])


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> Any:
    import torch

    pairs = [recipe.encode(tokenizer, t, max_length) for t in texts]
    return torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


def _batch(
    tokenizer: Any,
    examples: Sequence[MemeExample],
    targets: Sequence[str],
    opts: T5ClipOptions,
    limit: int,
) -> dict[str, Any]:
    import torch

    ids, mask = _encode(
        tokenizer, [recipe.input_text(e.text) for e in examples], opts.max_text_tokens
    )
    target_ids, _ = _encode(tokenizer, targets, limit)
    labels = torch.tensor(
        [recipe.loss_labels(row, tokenizer.pad_token_id) for row in target_ids.tolist()]
    )
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _optimiser(model: _Model, opts: T5ClipOptions, steps: int) -> tuple[Any, Any]:
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


def _snapshot(model: _Model) -> dict[str, Any]:
    return {
        k: v.detach().clone()
        for k, v in {
            **model.t5.state_dict(),
            **{"fusion." + k: v for k, v in model.fusion.state_dict().items()},
        }.items()
    }


def _restore(model: _Model, state: dict[str, Any]) -> None:
    model.t5.load_state_dict({k: v for k, v in state.items() if not k.startswith("fusion.")})
    model.fusion.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("fusion.")})


def _val_loss(
    model: _Model, images: _Images, tokenizer: Any, val: Sequence[MemeExample], opts: T5ClipOptions
) -> float:
    import torch

    model.train(False)
    losses = []
    with torch.no_grad():
        for start in range(0, len(val), opts.batch_size):
            chunk = val[start : start + opts.batch_size]
            batch = _batch(
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


def _generated_labels(
    model: _Model,
    images: _Images,
    tokenizer: Any,
    examples: Sequence[MemeExample],
    opts: T5ClipOptions,
) -> list[str]:
    import torch

    model.train(False)
    labels: list[str] = []
    with torch.no_grad():
        for start in range(0, len(examples), opts.batch_size):
            chunk = examples[start : start + opts.batch_size]
            batch = _batch(tokenizer, chunk, [""] * len(chunk), opts, 2)
            out = model.generate(
                images.features(chunk, train=False), batch, recipe.MAX_GENERATE_TOKENS
            )
            labels += [
                recipe.parse_label(t) for t in tokenizer.batch_decode(out, skip_special_tokens=True)
            ]
    return labels


def _run_stage(
    name: str,
    model: _Model,
    images: _Images,
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
        batch = _batch(tokenizer, chosen, [targets[i] for i in picked], opts, limit)
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
                predicted = _generated_labels(model, images, tokenizer, checked, opts)
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
    tokenizer, t5, clip, processor = _load(options.t5_model, options.clip_model)
    model = _Model(t5, clip, processor)
    images = _Images(model, options.augment, options.seed)
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


class T5ClipStudent:
    """A trained ``t5-clip`` student: label probabilities from the two answers' likelihoods.

    ``predict_proba`` scores "The answer is: harmful" and "The answer is: harmless" for each meme
    and normalises the two (the same rule as the generative student); :meth:`generate_labels` is
    the reference's own reading, the text after "The answer is: " in a greedy generation.
    """

    variant = "t5-clip"

    def __init__(self, folder: str | Path) -> None:
        import torch

        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "student.json").read_text())
        self.opts = T5ClipOptions(**self.meta["options"])
        tokenizer, t5, clip, processor = _load(str(self.folder / "t5"), self.opts.clip_model)
        model = _Model(t5, clip, processor)
        model.fusion.load_state_dict(torch.load(self.folder / "fusion.pt", weights_only=True))
        model.train(False)
        self.tokenizer, self.model = tokenizer, model
        self.images = _Images(model, augment=False, seed=self.opts.seed)

    def _check(self, examples: Sequence[MemeExample]) -> None:
        if any(not e.image for e in examples):
            raise ConfigError(
                "the t5-clip student needs the meme image (give --image / an image handle)"
            )

    def predict_proba(self, examples: Sequence[MemeExample], batch_size: int = 16) -> np.ndarray:
        """Probability of ``harmful`` per meme (softmax over the two answers' log-likelihoods)."""
        import torch

        self._check(examples)
        out = []
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                chunk = list(examples[start : start + batch_size])
                pairs = [e for e in chunk for _ in LABELS]
                targets = [recipe.label_target(label) for _ in chunk for label in LABELS]
                batch = _batch(
                    self.tokenizer, pairs, targets, self.opts, self.opts.max_label_tokens
                )
                scores = self.model.sequence_logprob(
                    self.images.features(pairs, train=False), batch
                )
                scores = scores.view(len(chunk), len(LABELS))
                out.append(torch.softmax(scores, -1)[:, LABELS.index("harmful")].numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def generate_labels(self, examples: Sequence[MemeExample]) -> list[str]:
        """The reference's prediction: greedy generation, text after ``"The answer is: "``."""
        self._check(examples)
        return _generated_labels(self.model, self.images, self.tokenizer, list(examples), self.opts)


def options_dict(options: T5ClipOptions) -> dict[str, Any]:
    """JSON-ready options (for reports)."""
    return asdict(options)

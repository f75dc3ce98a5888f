"""The paper's meme student at inference (variant ``t5-clip``): Flan-T5 reading frozen CLIP patch
features (Mr.Harm, Lin et al., EMNLP Findings 2023; trained by :mod:`mmagents.finetune.meme_t5clip`).

::

    image ─ CLIP vision (frozen) ─ patch features ───────┬──────────────┬──────────┐
                                                         ▼              ▼          ▼
    text ─ T5 encoder block 1 ─(+ cross-attn)─ … ─ block L ─(+ cross-attn)─ (+ cross-attn) ─ T5 decoder

After every encoder block, and once more on the encoder's output, the text states attend to the
image's CLIP patch states (one head, queries from the text, keys and values from the image, both
projected to half the T5 width) and the result is added to them, as in the reference's
``T5ForMultimodalGeneration`` (src/modules/t5_model.py). The network (:class:`FusedT5`), the
loader, the image features and the batch layout (the recipe of :mod:`._mrharm_paper`) are shared
with training. A student folder holds ``t5/`` (weights + tokenizer), ``fusion.pt`` (the
cross-attention layers) and ``student.json`` naming the CLIP model, which stays frozen and is not
copied.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmagents.errors import ConfigError
from mmagents.memes import LABELS, MemeExample
from mmagents.models.memes import _mrharm_paper as recipe

__all__ = [
    "DEFAULT_CLIP",
    "DEFAULT_T5",
    "FusedT5",
    "MemeImages",
    "T5ClipOptions",
    "T5ClipStudent",
    "encode_texts",
    "fusion_class",
    "generated_labels",
    "load_t5_clip",
    "make_batch",
]

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


def fusion_class() -> Any:
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


class FusedT5:
    """T5 with the fusion layers hooked into its encoder, and the frozen CLIP vision tower."""

    def __init__(self, t5: Any, clip: Any, processor: Any, fusion: Any | None = None) -> None:
        from torch import nn

        self.t5, self.clip, self.processor = t5, clip, processor
        clip.requires_grad_(False).eval()
        image_dim, text_dim = clip.config.hidden_size, t5.config.d_model
        fuse = fusion_class()
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


def load_t5_clip(t5_path: str, clip_path: str) -> tuple[Any, Any, Any, Any]:
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


class MemeImages:
    """Meme images: opened once, features cached when not augmented."""

    def __init__(self, model: FusedT5, augment: bool, seed: int) -> None:
        self.model, self.augment = model, augment
        self._cache: dict[str | None, Any] = {}
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


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> Any:
    import torch

    pairs = [recipe.encode(tokenizer, t, max_length) for t in texts]
    return torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


def make_batch(
    tokenizer: Any,
    examples: Sequence[MemeExample],
    targets: Sequence[str],
    opts: T5ClipOptions,
    limit: int,
) -> dict[str, Any]:
    import torch

    ids, mask = encode_texts(
        tokenizer, [recipe.input_text(e.text) for e in examples], opts.max_text_tokens
    )
    target_ids, _ = encode_texts(tokenizer, targets, limit)
    labels = torch.tensor(
        [recipe.loss_labels(row, tokenizer.pad_token_id) for row in target_ids.tolist()]
    )
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def generated_labels(
    model: FusedT5,
    images: MemeImages,
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
            batch = make_batch(tokenizer, chunk, [""] * len(chunk), opts, 2)
            out = model.generate(
                images.features(chunk, train=False), batch, recipe.MAX_GENERATE_TOKENS
            )
            labels += [
                recipe.parse_label(t) for t in tokenizer.batch_decode(out, skip_special_tokens=True)
            ]
    return labels


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
        tokenizer, t5, clip, processor = load_t5_clip(str(self.folder / "t5"), self.opts.clip_model)
        model = FusedT5(t5, clip, processor)
        model.fusion.load_state_dict(torch.load(self.folder / "fusion.pt", weights_only=True))
        model.train(False)
        self.tokenizer, self.model = tokenizer, model
        self.images = MemeImages(model, augment=False, seed=self.opts.seed)

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
                batch = make_batch(
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
        return generated_labels(self.model, self.images, self.tokenizer, list(examples), self.opts)

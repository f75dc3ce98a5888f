"""The encoder student at inference: MiniLM-L6 over the (text, caption) pair, mean-pooled, and a
label head (variant ``encoder``; trained by :mod:`mmagents.finetune.meme_encoder`).

The network is built here once for both sides: :func:`build_net` adds the ``classifier`` head
(harmless / harmful) and the ``align`` head (a linear map into the frozen base encoder's space,
used by training's rationale-alignment loss) to the encoder; :func:`tokenize_pairs` encodes memes
as sentence pairs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmagents.memes import LABELS, MemeExample

if TYPE_CHECKING:
    import torch

__all__ = ["EncoderStudent", "build_net", "mean_pool", "tokenize_pairs"]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-6)


def build_net(encoder: Any, teacher_dim: int) -> Any:
    from torch import nn

    class EncoderStudentNet(nn.Module):
        """Encoder + mean pooling + label head + alignment head."""

        def __init__(self) -> None:
            super().__init__()
            hidden = int(encoder.config.hidden_size)
            self.encoder = encoder
            self.dropout = nn.Dropout(0.1)
            self.classifier = nn.Linear(hidden, len(LABELS))
            self.align = nn.Linear(hidden, teacher_dim)

        def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.encoder(**batch).last_hidden_state
            pooled = mean_pool(out, batch["attention_mask"])
            return self.classifier(self.dropout(pooled)), self.align(pooled)

    return EncoderStudentNet()


def tokenize_pairs(tokenizer: Any, examples: Sequence[MemeExample], max_length: int) -> Any:
    return tokenizer(
        [e.text for e in examples],
        [e.caption or "" for e in examples],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )


class EncoderStudent:
    """A trained encoder student, loaded from its folder, classifying (text, caption) pairs.

    Args:
        folder: The training output folder (``student.json`` with ``variant = "encoder"``).
    """

    variant = "encoder"

    def __init__(self, folder: str | Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "student.json").read_text())
        self.max_length = int(self.meta["options"]["max_length"])
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder / "encoder")
        encoder = AutoModel.from_pretrained(self.folder / "encoder")
        heads = torch.load(self.folder / "heads.pt", weights_only=True)
        self.net = build_net(encoder, int(heads["align.weight"].shape[0]))
        self.net.load_state_dict(heads, strict=False)
        self.net.eval()
        # A CV-selected student may average in a TF-IDF baseline (finetune/meme_select.py).
        self.tfidf: Any = None
        self.tfidf_weight = 0.0
        self.threshold = 0.5
        head_file = self.folder / "frozen_head.json"
        if head_file.is_file():
            head = json.loads(head_file.read_text())
            if float(head.get("tfidf_weight") or 0) > 0:
                from mmagents.models.memes.tfidf import TfidfPart

                self.tfidf = TfidfPart(head["tfidf"])
                self.tfidf_weight = float(head["tfidf_weight"])
                self.threshold = float(head["threshold"])

    def predict_proba(self, examples: Sequence[MemeExample], batch_size: int = 32) -> np.ndarray:
        """Probability of ``harmful`` for each example."""
        import torch

        probs: list[np.ndarray] = []
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                chunk = examples[start : start + batch_size]
                batch = tokenize_pairs(self.tokenizer, chunk, self.max_length)
                logits, _ = self.net(dict(batch))
                probs.append(torch.softmax(logits, -1)[:, 1].numpy())
        p = np.concatenate(probs) if probs else np.zeros(0)
        if self.tfidf is None or not len(p):
            return p
        return self._ensemble(p, examples)

    def _ensemble(self, p: np.ndarray, examples: Sequence[MemeExample]) -> np.ndarray:
        """``(1 - w) p + w p_tfidf``, moved so that 0.5 falls on the chosen threshold."""
        from mmagents.models.memes.tfidf import meme_text

        texts = [meme_text(e.text, e.caption or "") for e in examples]
        mixed = (1 - self.tfidf_weight) * p + self.tfidf_weight * self.tfidf.proba(texts)
        mixed = np.clip(mixed, 1e-6, 1 - 1e-6)
        t = min(max(self.threshold, 1e-6), 1 - 1e-6)
        z = np.log(mixed / (1 - mixed)) - math.log(t / (1 - t))
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

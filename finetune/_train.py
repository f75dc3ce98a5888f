"""What every student trainer shares: deterministic batches, checkpoints, resume, progress, memory.

A run is a sequence of optimisation steps numbered globally across its stages. The batch of step
``s`` is a pure function of ``(seed, s)`` (a seeded permutation per epoch), and every checkpoint
holds the trainable weights, the optimiser and scheduler states and the RNG states, so a run killed
at any point and restarted resumes from its last checkpoint and ends with the weights an
uninterrupted run would have produced.

Checkpoints are written to a temporary folder and renamed into place: a kill during a save leaves
the previous checkpoint intact. A checkpoint also records the run's fingerprint (data, options,
base model); resuming with a different fingerprint is refused rather than silently mixed.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmagents.errors import ConfigError

__all__ = [
    "Checkpointer",
    "batch_indices",
    "capture_rng",
    "clear_checkpoints",
    "configure_threads",
    "peak_rss_mb",
    "restore_rng",
    "seed_everything",
    "train_loop",
]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_threads(threads: int | str = "auto") -> int:
    """Set torch's CPU threads; ``"auto"`` picks 1 on an oversubscribed machine, else all cores.

    Spinning OpenMP threads on cores that other processes already saturate make every step
    several times slower than one thread (measured here: 13 s vs 3 s per MiniLM step with the
    1-minute load average at 6 per core), so a busy machine gets one thread.

    Returns:
        The number of threads set.
    """
    import torch

    cores = os.cpu_count() or 1
    if threads == "auto":
        count = 1 if os.getloadavg()[0] >= cores else cores
    else:
        count = max(1, int(threads))
    torch.set_num_threads(count)
    return count


def capture_rng() -> dict[str, Any]:
    """The RNG states that steer dropout and sampling (restored on resume)."""
    import torch

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng` captured."""
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Indices of the batch of ``step``: epoch ``e`` visits a permutation seeded by ``(seed, e)``.

    The last, shorter batch of an epoch is dropped so every step sees ``batch_size`` examples
    (when ``n < batch_size`` the whole data set is one batch).
    """
    size = min(batch_size, n)
    per_epoch = max(1, n // size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[position * size : (position + 1) * size].tolist()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``getrusage`` maxrss)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class Checkpointer:
    """Numbered checkpoints ``<out>/checkpoints/step-XXXXXXX/state.pt``; the last ``keep`` kept.

    Args:
        folder: The run's output folder.
        fingerprint: Identity of the run; a checkpoint of another run is refused.
        keep: How many checkpoints to keep.
    """

    def __init__(self, folder: Path, fingerprint: str, keep: int = 2) -> None:
        self.root = Path(folder) / "checkpoints"
        self.fingerprint = fingerprint
        self.keep = keep

    def _complete(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.glob("step-*") if (p / "state.pt").is_file()]
        return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))

    def latest(self) -> dict[str, Any] | None:
        """The state of the newest complete checkpoint, or ``None``.

        Raises:
            ConfigError: the checkpoint belongs to a run with another fingerprint.
        """
        import torch

        found = self._complete()
        if not found:
            return None
        meta = json.loads((found[-1] / "meta.json").read_text())
        if meta.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"{found[-1]} belongs to another run (different data, options or base model); "
                "use a new --out folder or delete its checkpoints/ to start over"
            )
        state: dict[str, Any] = torch.load(found[-1] / "state.pt", weights_only=False)
        return state

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Write the checkpoint of ``step`` atomically and prune old ones."""
        import torch

        final = self.root / f"step-{step:07d}"
        tmp = self.root / f".tmp-step-{step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": step, "fingerprint": self.fingerprint}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in self._complete()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final


def _stage_at(stages: Sequence[tuple[str, int]], step: int) -> str:
    offset = 0
    for name, steps in stages:
        offset += steps
        if step < offset:
            return name
    return stages[-1][0]


@dataclass
class _Run:
    """Mutable state of one training loop: the stage being trained and its optimiser."""

    stage: str | None = None
    optimizer: Any = None
    scheduler: Any = None
    pending_rng: dict[str, Any] | None = None


def train_loop(
    module: Any,
    stages: Sequence[tuple[str, int]],
    loss_fn: Callable[[str, int], dict[str, Any]],
    *,
    out: Path,
    fingerprint: str,
    lr: float | Callable[[], list[dict[str, Any]]],
    checkpoint_every: int = 50,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Run the stages' optimisation steps on ``module``, checkpointing and resuming.

    Args:
        module: The torch module; its parameters with ``requires_grad`` are trained and saved.
        stages: ``(name, steps)`` in order; steps are numbered globally across stages.
        loss_fn: ``(stage, global_step) -> {name: loss tensor}``; their sum is minimised (an
            empty dict skips the step's update).
        out: Output folder (``checkpoints/``, ``train_log.jsonl``).
        fingerprint: Identity of the run, checked against existing checkpoints.
        lr: A learning rate, or a function returning AdamW parameter groups (each with ``lr``);
            every stage gets a fresh AdamW with linear warm-up (10 %) and decay.
        checkpoint_every: Save every N steps (and at the end).
        progress: Show a progress bar.
        stop_after: Return after this global step (tests simulate a kill with it).

    Returns:
        ``steps``, ``resumed_from`` (step or ``None``), ``train_seconds``, ``stopped_at``.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    checkpointer = Checkpointer(out, fingerprint)
    resume = checkpointer.latest()
    first = 0
    run = _Run()
    if resume is not None:
        module.load_state_dict(resume["model"], strict=False)
        first, run.pending_rng = int(resume["step"]), resume["rng"]
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    lengths = dict(stages)

    def enter(stage: str) -> None:
        groups = (
            lr()
            if callable(lr)
            else [{"params": [p for p in module.parameters() if p.requires_grad], "lr": lr}]
        )
        run.optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
        steps = lengths[stage]
        run.scheduler = get_linear_schedule_with_warmup(run.optimizer, max(1, steps // 10), steps)
        if resume is not None and resume["stage"] == stage and run.pending_rng is not None:
            run.optimizer.load_state_dict(resume["optimizer"])
            run.scheduler.load_state_dict(resume["scheduler"])
        if run.pending_rng is not None:  # resumed: continue the random streams where they were
            restore_rng(run.pending_rng)
            run.pending_rng = None
        run.stage = stage

    def save(step: int) -> None:
        state = {k: v for k, v in module.state_dict().items() if k in trainable}
        checkpointer.save(
            step,
            {
                "step": step,
                "stage": run.stage,
                "model": state,
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "rng": capture_rng(),
            },
        )

    total = sum(steps for _, steps in stages)
    started = time.perf_counter()
    last = first
    bar = tqdm(total=total, initial=first, desc="training", disable=not progress, unit="step")
    with (Path(out) / "train_log.jsonl").open("a", encoding="utf-8") as log:
        try:
            for step in range(first, total):
                stage = _stage_at(stages, step)
                if stage != run.stage:
                    enter(stage)
                    bar.set_description(f"stage {stage}")
                module.train()
                losses = loss_fn(stage, step)
                if losses:
                    run.optimizer.zero_grad()
                    torch.stack(list(losses.values())).sum().backward()
                    torch.nn.utils.clip_grad_norm_(
                        [p for p in module.parameters() if p.requires_grad], 1.0
                    )
                    run.optimizer.step()
                run.scheduler.step()
                values = {k: round(float(v.detach()), 5) for k, v in losses.items()}
                elapsed = round(time.perf_counter() - started, 3)
                record = {"step": step + 1, "stage": stage, **values, "seconds": elapsed}
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(values)
                bar.update(1)
                last = step + 1
                if last % checkpoint_every == 0 or last == total:
                    save(last)
                if stop_after is not None and last >= stop_after:
                    break
        finally:
            bar.close()
    stopped = stop_after is not None and last >= stop_after and last < total
    return {
        "steps": total,
        "resumed_from": first if resume is not None else None,
        "train_seconds": round(time.perf_counter() - started, 2),
        "stopped_at": last if stopped else None,
    }


def clear_checkpoints(out: Path) -> None:
    """Remove the run's checkpoints once its final student is saved."""
    shutil.rmtree(Path(out) / "checkpoints", ignore_errors=True)

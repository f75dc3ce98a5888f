"""How RECODE PredCls cost grows with the number of object pairs in an image.

Runs ``recode-predcls``'s glue (``eval_predcls_sample``) on synthetic images with n objects
(n·(n−1) ordered pairs, 24 VG150 semantic predicates each) on the fake backends (a scripted cue
writer, the deterministic fake scorer), and prints per image: pairs, scorer image calls, images
embedded, text calls, distinct texts embedded, cue-writer calls and wall time, then the growth
ratios between the largest and the smallest image. Both protocols: ``--protocol paper|mmagents``.

    python bench/recode_scale.py [--protocol paper] [--objects 2 4 8 12]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from mmagents._config import load_config
from mmagents.eval.recode_predcls import eval_predcls_sample
from mmagents.graphs._recode_paper import VG150_SEMANTIC
from mmagents.models.fake import FakeEmbedder, FakeScorer, ScriptedChat
from mmagents.runtime import Models

CUES = {
    "subject_cues": ["the subject holds the object", "the subject's hands"],
    "object_cues": ["the object is held"],
    "spatial_cues": ["the subject is above the object"],
    "reasoning": "r",
    "weights": {"subject": 1.0, "object": 1.0, "spatial": 1.0},
    "plausible": True,
}
LABELS = [
    "man",
    "horse",
    "hat",
    "dog",
    "table",
    "cup",
    "woman",
    "tree",
    "car",
    "bag",
    "kid",
    "sign",
]


class CountingScorer(FakeScorer):
    """The fake scorer, counting calls and items."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = {"image_calls": 0, "images": 0, "text_calls": 0, "texts": 0}

    def embed_images(self, images: list[Any]) -> Any:
        self.counts["image_calls"] += 1
        self.counts["images"] += len(images)
        return super().embed_images(images)

    def embed_texts(self, texts: list[str]) -> Any:
        self.counts["text_calls"] += 1
        self.counts["texts"] += len(texts)
        return super().embed_texts(texts)


def one(n: int, protocol: str, root: Path) -> dict[str, Any]:
    config = load_config(environ={"MMAGENTS_HOME": str(root / f"home-{n}")})
    scorer = CountingScorer()
    llm = ScriptedChat(replies=[json.dumps(CUES)], cycle=True)
    models = Models(config, llm=llm, scorer=scorer, embed=FakeEmbedder())
    path = root / f"img-{n}.png"
    Image.new("RGB", (640, 480), (90, 120, 60)).save(path)
    objects = [
        {"label": i + 1, "name": LABELS[i], "box": [40 * i, 30 * i, 40 * i + 120, 30 * i + 100]}
        for i in range(n)
    ]
    sample = {
        "image": str(path),
        "objects": objects,
        "predicates": {str(p): f"predicate{p}" for p in VG150_SEMANTIC},
        "num_classes": 51,
    }
    start = time.perf_counter()
    out = eval_predcls_sample(sample, models=models, settings={"protocol": protocol})
    wall = time.perf_counter() - start
    return {"objects": n, "pairs": out["pairs"], **scorer.counts,
            "llm_calls": len(llm.calls), "wall_s": round(wall, 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="paper", choices=["paper", "mmagents"])
    parser.add_argument("--objects", type=int, nargs="+", default=[2, 4, 8])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [one(n, args.protocol, Path(tmp)) for n in args.objects]
    keys = list(rows[0])
    print("  ".join(f"{k:>11}" for k in keys))
    for row in rows:
        print("  ".join(f"{row[k]:>11}" for k in keys))
    first, last = rows[0], rows[-1]
    print(f"\nprotocol={args.protocol}; from {first['pairs']} to {last['pairs']} pairs "
          f"(x{last['pairs'] / first['pairs']:.1f}):")  # fmt: skip
    for k in ("image_calls", "images", "text_calls", "texts", "llm_calls", "wall_s"):
        ratio = last[k] / first[k] if first[k] else float("nan")
        print(f"  {k:<12} x{ratio:.2f}")


if __name__ == "__main__":
    main()

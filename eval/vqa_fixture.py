"""A small VQA data set written from the bundled sample photos, for smoke runs of the vqa tasks.

Six real photographs (scikit-image's ``skimage.data``, see :mod:`mmagents.samples`), one question
each, with hand-written answers: ten per question in the VQA style for the open-ended ``vqa`` task
(``answers``), or four choices and the correct one for ``vqa-mc`` (``choices`` / ``answer``). It is a
smoke test of the pipeline, not a benchmark: six questions measure nothing.

    python -m mmagents.eval.vqa_fixture /tmp/vqa            # writes /tmp/vqa/vqa.jsonl + images
    mmagents eval run vqa --data /tmp/vqa/vqa.jsonl --out /tmp/v
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmagents._config import Config

__all__ = ["VQA_FIXTURE", "main", "write_vqa_fixture"]

#: sample → (question, ten human-style answers, four choices, the correct choice).
VQA_FIXTURE: dict[str, tuple[str, list[str], list[str], str]] = {
    "cat": (
        "What animal is in this picture?",
        ["cat"] * 7 + ["tabby cat", "kitten", "tabby"],
        ["dog", "cat", "rabbit", "fox"],
        "cat",
    ),
    "astronaut": (
        "What is the person wearing?",
        ["flight suit"] * 4 + ["spacesuit"] * 3 + ["suit", "uniform", "orange suit"],
        ["a wedding dress", "a flight suit", "a swimsuit", "a raincoat"],
        "a flight suit",
    ),
    "coffee": (
        "What drink is in the cup?",
        ["coffee"] * 8 + ["espresso", "latte"],
        ["tea", "orange juice", "coffee", "milk"],
        "coffee",
    ),
    "rocket": (
        "What vehicle is in this picture?",
        ["rocket"] * 7 + ["space shuttle", "spacecraft", "rocket ship"],
        ["a bus", "a rocket", "a bicycle", "a sailboat"],
        "a rocket",
    ),
    "camera": (
        "What is the man holding?",
        ["camera"] * 8 + ["tripod", "camera on tripod"],
        ["an umbrella", "a guitar", "a camera", "a book"],
        "a camera",
    ),
    "coins": (
        "What objects are in this picture?",
        ["coins"] * 8 + ["money", "old coins"],
        ["keys", "coins", "buttons", "marbles"],
        "coins",
    ),
}


def _record(name: str, image: str, multiple_choice: bool) -> dict[str, Any]:
    question, answers, choices, correct = VQA_FIXTURE[name]
    record: dict[str, Any] = {"id": f"sample-{name}", "image": image, "question": question}
    if multiple_choice:
        record.update(choices=choices, answer=correct)
    else:
        record["answers"] = answers
    return record


def write_vqa_fixture(
    out_dir: str | Path, config: Config | None = None, *, multiple_choice: bool = False
) -> Path:
    """Write ``vqa.jsonl`` (or ``vqa-mc.jsonl``) and its photos under ``images/`` in ``out_dir``.

    Image paths in the file are relative to it, so the folder can be moved or shared.

    Args:
        out_dir: Destination folder (created).
        config: Where the sample photos are cached (default: the environment's config).
        multiple_choice: Write ``choices`` and ``answer`` (task ``vqa-mc``) instead of
            ``answers`` (task ``vqa``).

    Returns:
        The JSONL file.
    """
    from mmagents.samples import sample_path

    out = Path(out_dir).expanduser()
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for name in VQA_FIXTURE:
        target = out / "images" / f"{name}.png"
        if not target.exists():
            shutil.copyfile(sample_path(name, config), target)
        lines.append(json.dumps(_record(name, f"images/{name}.png", multiple_choice)))
    path = out / ("vqa-mc.jsonl" if multiple_choice else "vqa.jsonl")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mmagents.eval.vqa_fixture OUT_DIR [--multiple-choice]``: print the file written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_dir", help="destination folder")
    parser.add_argument("--multiple-choice", action="store_true", help="write vqa-mc data")
    args = parser.parse_args(argv)
    print(write_vqa_fixture(args.out_dir, multiple_choice=args.multiple_choice))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

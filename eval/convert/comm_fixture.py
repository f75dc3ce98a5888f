"""A tiny data set in the CoMM release's format, for smoke runs of the four ``comm-*`` tasks.

Three how-to documents of three steps, each step one text and one drawn picture (coloured shapes
that change from step to step, so image metrics see structure, not flat colour), written as the
release lays them out (``data_id``, ``summary_info``, ``step_info`` with ``{"type": "text" |
"image", …}`` contents and ``image_path`` relative to the file), then converted with
``mmagents eval convert comm``. It exercises the pipeline, not a model: three documents measure
nothing.

    python -m mmagents.eval.convert.comm_fixture /tmp/comm     # writes comm_release.json, images/, comm.jsonl
    mmagents eval run comm-text-to-image --data /tmp/comm/comm.jsonl --out /tmp/c2
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["COMM_FIXTURE", "main", "write_comm_fixture"]

#: data_id → (topic, step texts).
COMM_FIXTURE: dict[str, tuple[str, list[str]]] = {
    "fixture-bread": (
        "How to bake a simple loaf of bread",
        [
            "Mix flour, water, yeast and salt in a large bowl.",
            "Knead the dough on a floured table for ten minutes.",
            "Bake the loaf in a hot oven until the crust is brown.",
        ],
    ),
    "fixture-tea": (
        "How to brew a cup of green tea",
        [
            "Heat fresh water until it is hot but not boiling.",
            "Put the tea leaves in a cup and pour the water over them.",
            "Wait two minutes, then remove the leaves and drink.",
        ],
    ),
    "fixture-plant": (
        "How to repot a house plant",
        [
            "Choose a pot one size larger with a drainage hole.",
            "Lift the plant out and loosen the roots with your fingers.",
            "Set the plant in fresh soil and water it well.",
        ],
    ),
}


def _picture(doc: int, step: int, path: Path) -> None:
    """A 96×96 picture: a background of the document's colour, a shape that moves per step."""
    from PIL import Image, ImageDraw

    base = [(200, 170, 120), (120, 180, 120), (150, 120, 90)][doc % 3]
    image = Image.new("RGB", (96, 96), base)
    draw = ImageDraw.Draw(image)
    x = 10 + 25 * step
    draw.ellipse((x, 20, x + 40, 60), fill=(60 + 60 * step, 40, 200 - 50 * step))
    draw.rectangle((5, 70 - 10 * step, 90, 90), fill=(80, 80 + 40 * doc, 80))
    image.save(path, format="JPEG", quality=95)


def _document(doc: int, data_id: str, topic: str, texts: list[str]) -> dict[str, Any]:
    steps = []
    for step, text in enumerate(texts):
        steps.append(
            [
                {"type": "text", "content": text},
                {"type": "image", "url": "", "image_path": f"images/{data_id}_{step}.jpg"},
            ]
        )
    return {
        "data_id": data_id,
        "summary_info": [{"type": "text", "content": topic}],
        "step_info": steps,
    }


def write_comm_fixture(out_dir: str | Path) -> Path:
    """Write ``comm_release.json`` (the release's format) and its ``images/`` into ``out_dir``,
    and the converted ``comm.jsonl`` the ``comm-*`` tasks read.

    Returns:
        The JSONL file.
    """
    from mmagents.eval.convert import convert

    out = Path(out_dir).expanduser()
    (out / "images").mkdir(parents=True, exist_ok=True)
    documents = []
    for doc, (data_id, (topic, texts)) in enumerate(COMM_FIXTURE.items()):
        for step in range(len(texts)):
            _picture(doc, step, out / "images" / f"{data_id}_{step}.jpg")
        documents.append(_document(doc, data_id, topic, texts))
    release = out / "comm_release.json"
    release.write_text(json.dumps(documents, indent=1) + "\n", encoding="utf-8")
    jsonl = out / "comm.jsonl"
    convert("comm", release, jsonl)
    return jsonl


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mmagents.eval.convert.comm_fixture OUT_DIR``: print the JSONL file written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_dir", help="destination folder")
    args = parser.parse_args(argv)
    print(write_comm_fixture(args.out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The released CoMM data (Chen et al., 2024; HKUST-LongGroup/CoMM) to interleaved-document JSONL.

Source: the release's list of documents (``*.pth`` as ``datasets/download_images.py`` reads it
with ``torch.load``, or the same list as ``.json`` / ``.jsonl``). Each document has ``data_id``,
``summary_info`` (a list of contents) and ``step_info`` (a list of steps, each a list of
contents); a content is ``{"type": "text", "content": str}`` or ``{"type": "image", "url": …,
"image_path": …}`` (``eval/utils.py`` ``get_steps_text``: a step's text is the concatenation of its
text contents, in order).

Records: ``id`` (data_id), ``topic`` (the summary's text), ``steps`` (``[{"text", "image"?}]``,
the first image of each step under ``--set images=DIR``, default ``SRC``'s folder), the shape the
``interleaved`` task and the ``comm`` graphs read. A ``.pth`` file is read with
``torch.load(weights_only=True)``: plain containers and strings only, never arbitrary pickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmagents.errors import DatasetError
from mmagents.eval.convert import Conversion
from mmagents.eval.convert._common import check_options

__all__ = ["convert", "step_text"]


def step_text(contents: list[dict[str, Any]]) -> str:
    """The text of a step or summary: its text contents joined in order (eval/utils.py:20-28)."""
    return "".join(str(c.get("content") or "") for c in contents if c.get("type") == "text")


def _load(path: Path) -> list[Any]:
    try:
        if path.suffix == ".pth":
            import torch

            data = torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".jsonl":
            lines = path.read_text(encoding="utf-8").splitlines()
            data = [json.loads(line) for line in lines if line.strip()]
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RuntimeError) as err:  # torch's unpickling errors are these
        raise DatasetError(path, f"unreadable CoMM file: {str(err)[:300]}") from None
    if not isinstance(data, list):
        raise DatasetError(path, "expected a list of documents")
    return data


def convert(
    src: Path, *, split: str | None = None, dataset: str | None = None, **options: Any
) -> Conversion:
    """Convert one CoMM release file (``src``).

    Options:
        images: Folder the release's ``image_path`` values are relative to (default: ``src``'s
            folder).
        limit: At most this many documents.
    """
    check_options("comm", options, {"images", "limit"})
    if not src.is_file():
        raise DatasetError(src, "expected a CoMM release file (.pth, .json or .jsonl)")
    images = Path(options.get("images") or src.parent)
    limit = int(options["limit"]) if options.get("limit") is not None else None
    records: list[dict[str, Any]] = []
    extra_images = no_steps = 0
    for index, item in enumerate(_load(src)[:limit], 1):
        if not isinstance(item, dict) or "step_info" not in item:
            raise DatasetError(src, f"document {index} has no step_info")
        steps = []
        for step in item["step_info"]:
            contents = [c for c in step if isinstance(c, dict)]
            paths = [
                str(c["image_path"])
                for c in contents
                if c.get("type") == "image" and c.get("image_path")
            ]
            entry: dict[str, Any] = {"text": step_text(contents).strip()}
            if paths:
                entry["image"] = str((images / paths[0]).resolve())
                extra_images += len(paths) - 1
            steps.append(entry)
        if not steps:
            no_steps += 1
            continue
        summary = [c for c in item.get("summary_info") or [] if isinstance(c, dict)]
        records.append(
            {
                "id": str(item.get("data_id", index)),
                "topic": step_text(summary).strip(),
                "steps": steps,
            }
        )
    notes = {"documents_without_steps": no_steps, "extra_images_per_step_dropped": extra_images}
    return Conversion(records=records, notes=notes)

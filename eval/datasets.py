"""Dataset loaders: JSONL files, image folders and Hugging Face datasets (:mod:`mmagents.eval.hf`),
with errors that name the file and line (or row).

Every sample is a plain dict with a string ``id`` (from the task's ``id_field``, else
``<file stem>:<line>``); ids must be unique because ``--resume`` and ``merge`` key on them.
Relative image paths are resolved against the data file's folder and checked at load time, so a
run fails before its first model call rather than halfway through.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmagents._jsonl import iter_jsonl
from mmagents.errors import DatasetError
from mmagents.eval.tasks import TaskSpec

if TYPE_CHECKING:
    from mmagents._config import Config

__all__ = [
    "IMAGE_SUFFIXES",
    "check_limit",
    "iter_jsonl",
    "load_dataset",
    "load_image_folder",
    "load_jsonl",
    "validate_targets",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
_REMOTE = ("http://", "https://", "data:")


#: Metrics whose target is a list of answers (VQA's ten annotators); every other metric scores
#: one class label per sample.
_LIST_TARGET_METRICS = frozenset({"vqa_accuracy", "recall_at_k", "mean_recall_at_k"})


def _bad_label(value: Any, allow_list: bool) -> str | None:
    """Why ``value`` cannot be a target label, or ``None`` when it can."""
    if isinstance(value, bool) or value is None:
        return f"a label must be a string or an integer, got {json.dumps(value)}"
    if isinstance(value, str):
        return None if value.strip() else "a label must not be empty"
    if isinstance(value, int):
        return None
    if isinstance(value, float):
        return f"a label must be a string or an integer, got the number {value!r}"
    if isinstance(value, list) and allow_list:
        if not value:
            return "the list of answers is empty"
        reasons = [r for v in value if (r := _bad_label(v, False))]
        return reasons[0] if reasons else None
    return f"a label must be a string or an integer, got {type(value).__name__} {value!r:.60}"


def validate_targets(task: TaskSpec, samples: list[dict[str, Any]], path: object) -> None:
    """Check every sample's target before the run starts, so a ``null``, ``1.5``, ``NaN``,
    ``[1, 2]`` or ``{"a": 1}`` label is an error naming the sample, never a class of its own.

    When a metric declares its label set (``macro_f1: {labels: [...]}``), every normalised
    target must be in it.

    Raises:
        DatasetError: the first bad target, naming its sample id.
    """
    if not task.target:
        return
    allow_list = any(m.name in _LIST_TARGET_METRICS for m in task.metrics)
    declared = [m.params.get("labels") for m in task.metrics if m.params.get("labels")]
    normalise = task.build_normalizer() if declared else None
    labels = {str(label) for group in declared for label in group}
    for sample in samples:
        if task.target not in sample:
            continue  # a missing field is the loader's ``required`` check
        value = sample[task.target]
        reason = _bad_label(value, allow_list)
        if reason is None and normalise is not None and not isinstance(value, list):
            normalised = normalise(value)
            if str(normalised) not in labels:
                reason = f"label {value!r} is not one of the task's labels {sorted(labels)}"
        if reason is not None:
            raise DatasetError(path, f"sample {sample.get('id')!r}: {reason}")


def check_limit(limit: int | None) -> None:
    """``--limit`` must be a positive count (``-2`` silently meant "all but the last two").

    Raises:
        DatasetError: a zero or negative limit.
    """
    if limit is not None and limit < 1:
        raise DatasetError("--limit", f"must be a positive number of samples, got {limit}")


def _resolve_image(value: Any, base: Path, path: Path, line: int, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise DatasetError(path, f"field {field!r} must be an image path, got {value!r}", line)
    if value.startswith(_REMOTE):
        return value
    image = Path(value).expanduser()
    image = image if image.is_absolute() else base / image
    if not image.is_file():
        raise DatasetError(path, f"image file not found for field {field!r}: {image}", line)
    return str(image)


def _resolve_images(record: dict[str, Any], field: str, path: Path, line: int) -> None:
    """Resolve the image path(s) at ``field``: ``image``, or ``steps[].image`` inside a list."""
    head, sep, rest = field.partition("[].")
    if not sep:
        if field in record:
            record[field] = _resolve_image(record[field], path.parent, path, line, field)
        return
    items = record.get(head)
    if items is None:
        return
    if not isinstance(items, list):
        raise DatasetError(path, f"field {head!r} must be a list, got {type(items).__name__}", line)
    for item in items:
        if isinstance(item, dict):
            _resolve_images(item, rest, path, line)


def load_jsonl(
    path: str | Path,
    *,
    required: Iterable[str] = (),
    image_fields: Iterable[str] = (),
    id_field: str = "id",
) -> list[dict[str, Any]]:
    """Read one JSON object per line (blank lines are skipped).

    Args:
        path: The ``.jsonl`` file.
        required: Fields every record must have.
        image_fields: Fields holding image paths (made absolute, checked to exist); ``a[].b``
            names field ``b`` of every item of list ``a``.
        id_field: Field holding the sample id (default ``<stem>:<line>`` when absent).

    Raises:
        DatasetError: unreadable file, invalid JSON, a non-object line, a missing field, a missing
            image or a duplicate id — always naming ``file:line``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(path, "data file not found")
    required, image_fields = list(required), list(image_fields)
    samples: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for line_no, record in iter_jsonl(path):
        missing = [f for f in required if f not in record]
        if missing:
            raise DatasetError(path, f"missing field(s) {', '.join(map(repr, missing))}", line_no)
        for field in image_fields:
            _resolve_images(record, field, path, line_no)
        sample_id = str(record[id_field]) if id_field in record else f"{path.stem}:{line_no}"
        if sample_id in seen:
            raise DatasetError(
                path,
                f"duplicate id {sample_id!r} (first seen on line {seen[sample_id]})",
                line_no,
            )
        seen[sample_id] = line_no
        record["id"] = sample_id
        samples.append(record)
    if not samples:
        raise DatasetError(path, "the data file has no records (it is empty or blank)")
    return samples


def load_image_folder(root: str | Path, *, label_field: str = "label") -> list[dict[str, Any]]:
    """Read ``root/<class name>/<image>``: one sample per image, labelled by its folder.

    Samples are ``{"id": "<class>/<file>", "image": <absolute path>, label_field: <class>}``.

    Raises:
        DatasetError: the folder is missing or holds no class folder with images.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(root, "image folder not found")
    samples = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for image in sorted(class_dir.iterdir()):
            if image.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(
                    {
                        "id": f"{class_dir.name}/{image.name}",
                        "image": str(image.resolve()),
                        label_field: class_dir.name,
                    }
                )
    if not samples:
        raise DatasetError(root, "no images found in <root>/<class>/ sub-folders")
    return samples


def load_dataset(
    task: TaskSpec,
    path: str | Path | None = None,
    *,
    config: Config | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Load the samples of ``task`` from ``path`` (default: the task's own dataset path).

    Args:
        task: The task.
        path: Data file or folder (``--data``); for ``loader: hf`` also a hub dataset name.
        config: Whose image store ``loader: hf`` puts image cells in (default: the environment's).
        limit: ``loader: hf`` stops reading after this many rows; the other loaders read (and
            validate) the whole file.

    Raises:
        DatasetError: see :func:`load_jsonl` / :func:`load_image_folder` /
            :func:`mmagents.eval.hf.iter_hf_samples`.
        TaskError: no path given and the task has no default.
    """
    check_limit(limit)
    data = task.data_path(path)
    spec = task.dataset
    if spec.loader == "hf":
        from mmagents.eval.hf import load_hf
        from mmagents.images import default_store

        # A path that does not exist locally is a hub name, used as written (not task-relative).
        where: str | Path = data if data.exists() else str(path or spec.path)
        samples = load_hf(task, where, default_store(config), limit=limit)
    elif spec.loader == "image_folder":
        samples = load_image_folder(data, label_field=task.target or "label")
    else:
        samples = load_jsonl(
            data, required=spec.required, image_fields=spec.image_fields, id_field=task.id_field
        )
    validate_targets(task, samples, data)
    if spec.attach_classes and task.target:
        classes = sorted({str(s[task.target]) for s in samples})
        for sample in samples:
            sample.setdefault("classes", classes)
    return samples

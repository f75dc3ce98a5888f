"""Per-dataset meme students: ``<home>/students/<dataset>`` and which dataset a student learnt.

A student trained on one meme set does poorly on another (docs/results/meme.md), so each dataset
gets its own. ``mmagents finetune meme --register`` links the trained folder as
``<home>/students/<dataset>``; ``student.json`` records the dataset (``dataset``) and the training
file. :func:`resolve_student` turns a dataset name into a folder: an explicit table entry
(``[tools.classify_meme.students] harmc = "DIR"``) first, then the registered link.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmagents.errors import ConfigError
from mmagents.models.memes.student import read_student_meta

__all__ = [
    "dataset_of",
    "record_dataset",
    "register_student",
    "registered",
    "resolve_student",
    "students_dir",
]


def students_dir(home: str | Path | None = None) -> Path:
    """``<home>/students`` (``home``: given, else ``$MMAGENTS_HOME``, else ``~/.mmagents``)."""
    base = home or os.environ.get("MMAGENTS_HOME") or Path.home() / ".mmagents"
    return Path(base).expanduser() / "students"


def record_dataset(folder: str | Path, dataset: str, train_file: str) -> None:
    """Write which dataset (and file) the student in ``folder`` was trained on into its meta."""
    path = Path(folder) / "student.json"
    meta = json.loads(path.read_text())
    meta["dataset"] = dataset
    meta["train_file"] = train_file
    path.write_text(json.dumps(meta, indent=2))


def dataset_of(folder: str | Path) -> str | None:
    """The dataset the student in ``folder`` was trained on (``None`` when not recorded)."""
    value = read_student_meta(folder).get("dataset")
    return str(value) if value else None


def register_student(folder: str | Path, dataset: str, home: str | Path | None = None) -> Path:
    """Link ``folder`` as the student of ``dataset`` (replacing an earlier link).

    Raises:
        ConfigError: ``folder`` is not a student, or ``dataset`` is not a plain name.
    """
    if not dataset or "/" in dataset or dataset.startswith("."):
        raise ConfigError(f"a dataset name is a plain name such as harmc, not {dataset!r}")
    source = Path(folder).expanduser().resolve()
    read_student_meta(source)
    link = students_dir(home) / dataset
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        raise ConfigError(f"{link} exists and is not a link: remove it to register {source}")
    link.symlink_to(source, target_is_directory=True)
    return link


def registered(home: str | Path | None = None) -> dict[str, Path]:
    """The registered students by dataset name."""
    folder = students_dir(home)
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if (p / "student.json").is_file()}


def resolve_student(
    dataset: str, table: Mapping[str, Any] | None = None, home: str | Path | None = None
) -> Path:
    """The student folder of ``dataset``: ``table[dataset]``, else ``<home>/students/<dataset>``.

    Raises:
        ConfigError: no student for ``dataset`` (naming the ones there are).
    """
    if table and table.get(dataset):
        return Path(str(table[dataset])).expanduser()
    found = registered(home)
    if dataset in found:
        return found[dataset]
    known = sorted({*found, *(table or {})})
    raise ConfigError(
        f"no meme student for dataset {dataset!r} (known: {', '.join(known) or 'none'}); train "
        f"and register one with `mmagents finetune meme --train FILE --out DIR --dataset "
        f"{dataset} --register`"
    )

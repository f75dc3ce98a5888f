"""``loader: hf``: Hugging Face ``datasets`` as harness data (local files, saved folders, the hub).

::

    dataset:
      loader: hf
      path: lmms-lab/VQAv2          # a hub name, a save_to_disk folder, a data file or data folder
      split: validation
      name: null                    # the dataset's configuration, when it has several
      fields: {id: question_id, answers: "answers[].answer"}   # sample key <- column (path)
      streaming: true               # rows are read one at a time: memory stays flat

Where ``path`` points to decides how it is opened: a folder written by ``save_to_disk`` is read
as Arrow streams, batch by batch (``load_from_disk``'s memory map when ``streaming: false``); a ``.parquet`` / ``.arrow`` / ``.csv`` / ``.json(l)`` file, or a folder
in the hub's layout (``data/test-00000-of-00001.parquet``), goes through ``load_dataset`` with the
matching builder; anything else is a hub name, refused at once (not after a timeout) when
``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` is set.

Image columns (``Image`` features, and the task's ``image_fields``) are read undecoded and put into
the :class:`~mmagents.images.ImageStore` one row at a time; the sample holds the stored PNG's path,
so a sample is a few short strings whatever the images weigh, and runners see the same shape as from
a JSONL file. Rows are streamed, never materialised as a table in memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmagents.errors import DatasetError, ImageError

if TYPE_CHECKING:
    from mmagents.eval.tasks import TaskSpec
    from mmagents.images import ImageStore

__all__ = ["hub_offline", "iter_hf_samples", "load_hf", "open_hf_split"]

_BUILDERS = {
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
}
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def hub_offline(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment forbids the Hugging Face hub (``HF_HUB_OFFLINE=1`` and kin)."""
    env = os.environ if environ is None else environ
    return any(env.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS)


def _is_saved_folder(path: Path) -> bool:
    """A ``save_to_disk`` folder: one split (state.json) or a DatasetDict (dataset_dict.json)."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _pick_split(splits: Iterable[str], split: str | None, where: object) -> str:
    names = sorted(splits)
    if split is None:
        if len(names) == 1:
            return names[0]
        raise DatasetError(where, f"dataset has splits {names}: set dataset.split")
    if split not in names:
        raise DatasetError(where, f"no split {split!r}; splits: {names}")
    return split


def open_hf_split(
    where: str | Path, *, split: str | None, name: str | None, streaming: bool
) -> tuple[Iterable[Mapping[str, Any]], Mapping[str, Any], str]:
    """Open one split of a dataset: returns ``(rows, features, split name)``.

    Image features are read as ``Image(decode=False)``: rows carry the encoded bytes (or a path),
    not decoded pixels.

    Raises:
        DatasetError: a missing split, an unreadable file, or a hub name while the hub is offline
            or unreachable.
    """
    import datasets

    local = Path(where).expanduser()
    try:
        if local.is_dir() and _is_saved_folder(local):
            return _open_saved(local, split, streaming)
        if local.exists():
            builder, files = _builder_for(local)
            split = split or "train"
            table: Any = datasets.load_dataset(
                builder, name=name, data_files={split: files}, split=split, streaming=streaming
            )
        else:
            if hub_offline():
                raise DatasetError(
                    where,
                    "not a local file or folder, and the Hugging Face hub is offline "
                    "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set): download the dataset first "
                    "(save_to_disk) and point dataset.path or --data at it",
                )
            if split is None:
                raise DatasetError(where, "a hub dataset needs dataset.split")
            table = datasets.load_dataset(str(where), name=name, split=split, streaming=streaming)
    except DatasetError:
        raise
    except Exception as exc:  # datasets raises many types (FileNotFound, DatasetNotFound, HTTP ...)
        raise DatasetError(
            where, f"cannot open with datasets: {type(exc).__name__}: {exc}"
        ) from None
    features = table.features or {}
    for column, feature in features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            table = table.cast_column(column, datasets.Image(decode=False))
    return table, table.features or {}, split


def _open_saved(
    folder: Path, split: str | None, streaming: bool
) -> tuple[Iterable[Mapping[str, Any]], Mapping[str, Any], str]:
    """A ``save_to_disk`` folder, read record batch by record batch when ``streaming``.

    ``load_from_disk`` memory-maps the Arrow files, and every page a full pass touches stays in the
    process's resident set (RSS grows with the dataset); reading the files as Arrow streams keeps
    one batch in memory at a time.
    """
    import datasets

    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        split = _pick_split(splits, split, folder)
        folder = folder / split
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    split = split or state.get("_split") or "train"
    if not streaming:
        table = datasets.load_from_disk(str(folder))
        features = table.features
        for column, feature in features.items():
            if isinstance(feature, datasets.Image):  # a feature change, no rewritten copy
                table = table.cast_column(column, datasets.Image(decode=False))
        return table, features, split
    info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    features = datasets.Features.from_dict(info["features"])
    files = [folder / entry["filename"] for entry in state["_data_files"]]
    return _stream_arrow(files, _undecoded(features)), features, split


def _undecoded(features: Any) -> Any:
    """``features`` with every ``Image`` read undecoded."""
    import datasets

    return datasets.Features(
        {
            column: datasets.Image(decode=False) if isinstance(f, datasets.Image) else f
            for column, f in features.items()
        }
    )


def _stream_arrow(files: list[Path], features: Any) -> Iterator[dict[str, Any]]:
    import pyarrow as pa

    for path in files:
        with pa.OSFile(str(path), "rb") as handle:  # plain reads, not a memory map
            for batch in pa.ipc.open_stream(handle):
                for row in batch.to_pylist():
                    yield features.decode_example(row)


def _builder_for(local: Path) -> tuple[str, str | list[str]]:
    """The ``load_dataset`` builder and data files for a local file or a folder of data files."""
    if local.is_file():
        builder = _BUILDERS.get(local.suffix.lower())
        if builder is None:
            known = ", ".join(sorted(_BUILDERS))
            raise DatasetError(local, f"unknown data file type (known: {known})")
        return builder, str(local)
    files = sorted(p for p in local.rglob("*") if p.suffix.lower() in _BUILDERS and p.is_file())
    kinds = {_BUILDERS[p.suffix.lower()] for p in files}
    if len(kinds) != 1:
        found = ", ".join(sorted(kinds)) or "none"
        raise DatasetError(local, f"expected data files of one type in the folder, found: {found}")
    return kinds.pop(), [str(p) for p in files]


def _get_path(row: Mapping[str, Any], path: str) -> Any:
    """``a``, ``a.b`` (nested struct) or ``a[].b`` (field ``b`` of every item of list ``a``)."""
    head, sep, rest = path.partition("[].")
    if sep:
        items = _get_path(row, head)
        if isinstance(items, Mapping):  # a Sequence of structs reads as a struct of lists
            return _get_path(items, rest)
        if not isinstance(items, list):
            raise KeyError(path)
        return [_get_path(item, rest) for item in items]
    node: Any = row
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def _put_image(value: Any, store: ImageStore, base: Path | None) -> str:
    """Store an undecoded image cell (``{"bytes", "path"}``) or a path; return the PNG's path."""
    source: bytes | str | None = None
    if isinstance(value, Mapping):
        source = value.get("bytes") or value.get("path")
    elif isinstance(value, bytes | str):
        source = value
    if not source:
        raise ValueError(f"not an image: {str(value)[:80]!r}")
    if isinstance(source, str) and base is not None and not Path(source).is_absolute():
        source = str(base / source)
    return str(store.path(store.put(source)))


def iter_hf_samples(
    task: TaskSpec,
    where: str | Path,
    store: ImageStore,
    *,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the samples of ``task`` from the dataset at ``where``, one row at a time.

    Args:
        task: The task; its ``dataset`` gives split, name, fields, image_fields and required.
        where: A local path or a hub name.
        store: Where image cells go (the sample keeps the stored file's path).
        limit: Stop after this many rows (``--limit``: a large hub split is not read to the end).

    Raises:
        DatasetError: naming the dataset and the row: a missing field or id, a bad image, or a
            duplicate id.
    """
    spec = task.dataset
    rows, features, split = open_hf_split(
        where, split=spec.split, name=spec.name, streaming=spec.streaming
    )
    import datasets

    image_columns = {c for c, f in features.items() if isinstance(f, datasets.Image)}
    mapped_to = {column: key for key, column in spec.fields.items()}
    image_keys = set(spec.image_fields) | {mapped_to.get(c, c) for c in image_columns}
    local = Path(where).expanduser()
    base = (local if local.is_dir() else local.parent) if local.exists() else None
    seen: set[str] = set()
    for index, row in enumerate(rows):
        if limit is not None and index >= limit:
            return
        where_row = f"{where} [{split} row {index}]"
        sample = {k: v for k, v in row.items() if k not in spec.fields.values()}
        for key, column in spec.fields.items():
            try:
                sample[key] = _get_path(row, column)
            except KeyError:
                raise DatasetError(where_row, f"field {key!r}: no column {column!r}") from None
        missing = [f for f in spec.required if f not in sample]
        if missing:
            raise DatasetError(where_row, f"missing field(s) {', '.join(map(repr, missing))}")
        for key in image_keys & sample.keys():
            try:
                sample[key] = _put_image(sample[key], store, base)
            except (ValueError, OSError, ImageError) as exc:
                raise DatasetError(where_row, f"field {key!r}: {exc}") from None
        sample_id = str(sample[task.id_field]) if task.id_field in sample else f"{split}:{index}"
        if sample_id in seen:
            raise DatasetError(where_row, f"duplicate id {sample_id!r}")
        seen.add(sample_id)
        sample["id"] = sample_id
        yield sample


def load_hf(
    task: TaskSpec, where: str | Path, store: ImageStore, *, limit: int | None = None
) -> list[dict[str, Any]]:
    """The samples of :func:`iter_hf_samples` as a list (each a few short strings)."""
    return list(iter_hf_samples(task, where, store, limit=limit))

"""The Mr.Harm release (Lin et al., EMNLP Findings 2023) to meme task JSONL.

Release layout (``HKBUNLP/Mr.Harm-EMNLP2023``, folder ``Data``)::

    Data/training and inference data/{harmc,harmp,FHM}/{train,test}.jsonl + captions.pkl
    Data/{harmc,harmp,FHM}_rationale.json        teacher rationales, {id: text}

Harm-C / Harm-P lines are ``{"id", "image", "labels", "text"}`` with ``labels`` such as
``["not harmful"]`` or ``["somewhat harmful", "individual"]``: harmful means somewhat or very
harmful; the first entry is kept as ``fine_label`` and the second (the target) as ``target``. FHM
lines are ``{"id", "img": "img/01235.png", "label": 0|1, "text"}``. ``captions.pkl`` is a pickled
dict id -> caption; it is read by an unpickler that builds no object other than dicts, lists,
strings and integers (a pickle that names any class or function is refused, so a tampered file
cannot run code). Caption keys are looked up as the id, the image file stem (FHM's integer ids lost
their leading zeros, its keys did not) and either with a ``politics_`` prefix added or removed
(some Harm-P keys carry it).

Duplicate ids (``duplicates`` option): ``keep`` (default) keeps every line, as the reference's
training reads every line of its list, and renames the second and later copies ``<id>#2``,
``<id>#3`` … so that ids stay unique for ``--resume`` and ``merge`` (``source_id`` holds the
release's id); ``drop`` keeps only the first line of each id; ``error`` refuses the file. The notes
count repeated ids and how many repeats were exact copies.

Records: ``id``, ``source_id``, ``text``, ``caption``, ``label`` (harmful / harmless),
``fine_label``, ``target`` (Harm-C/P), ``image`` (with ``--set images=DIR``) and, for the train
split, ``rationale`` from the release's rationale file when it exists (``--set rationales=FILE``
overrides; ``--set rationales=none`` skips).
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmagents.errors import ConfigError, DatasetError
from mmagents.eval.convert import Conversion
from mmagents.eval.convert._common import check_options, require
from mmagents.eval.datasets import iter_jsonl

__all__ = ["DATASETS", "caption_keys", "convert", "load_captions", "meme_label"]

#: dataset name -> (folder in the release, rationale file name)
DATASETS = {
    "harmc": ("harmc", "harmc_rationale.json"),
    "harmp": ("harmp", "harmp_rationale.json"),
    "fhm": ("FHM", "FHM_rationale.json"),
}
_FINE = {"not harmful": "harmless", "somewhat harmful": "harmful", "very harmful": "harmful"}
_SUBDIR = "training and inference data"
_PLAIN = (dict, list, str, int)


class _PlainUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numbers only: every global lookup is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only plain data allowed")


def _check_plain(value: Any, depth: int = 0) -> None:
    if depth > 3 or not isinstance(value, _PLAIN) or isinstance(value, bool):
        raise TypeError(f"unexpected {type(value).__name__} in captions")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, depth + 1)
            _check_plain(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_plain(item, depth + 1)


def load_captions(path: Path) -> dict[str, str]:
    """Read ``captions.pkl`` as ``{str(key): caption}`` without running any pickled code.

    A list value (several captions) keeps its first caption.

    Raises:
        DatasetError: unreadable, not a dict, or holding anything but plain dict/list/str data.
    """
    try:
        data = _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
        _check_plain(data)
    except FileNotFoundError:
        raise DatasetError(path, "captions file not found") from None
    except (pickle.UnpicklingError, TypeError, EOFError, ValueError, AttributeError) as exc:
        raise DatasetError(path, f"not a plain pickled dict of captions ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(path, f"expected a dict id -> caption, got {type(data).__name__}")
    captions = {}
    for key, value in data.items():
        if isinstance(value, list):
            value = value[0] if value else ""
        if not isinstance(value, str):
            raise DatasetError(path, f"caption of {key!r} is not a string")
        captions[str(key)] = value.strip()
    return captions


def caption_keys(record_id: str, image: str | None) -> list[str]:
    """The keys a record's caption may be stored under, most specific first."""
    bases = [record_id]
    if image:
        bases.append(Path(image).stem)
    keys: list[str] = []
    for base in bases:
        plain = base.removeprefix("politics_")
        keys += [base, f"politics_{plain}", plain]
    return list(dict.fromkeys(keys))


def meme_label(raw: dict[str, Any], path: Path, line: int) -> tuple[str, str | None, str | None]:
    """``(label, fine_label, target)`` from a release line (``labels`` list or FHM ``label``)."""
    if "labels" in raw:
        labels = raw["labels"]
        if not isinstance(labels, list) or not labels or str(labels[0]).lower() not in _FINE:
            raise DatasetError(path, f"labels must start with one of {sorted(_FINE)}", line)
        fine = str(labels[0]).lower()
        target = str(labels[1]).lower() if len(labels) > 1 else None
        return _FINE[fine], fine, target
    if raw.get("label") in (0, 1, "0", "1"):
        return ("harmful" if int(raw["label"]) == 1 else "harmless"), None, None
    raise DatasetError(path, "expected `labels` (Harm-C/P) or `label` 0/1 (FHM)", line)


def _rationales(value: Any, data_root: Path, file_name: str, split: str) -> dict[str, str]:
    if value == "none" or (value is None and split != "train"):
        return {}
    path = Path(value).expanduser() if value else data_root / file_name
    if value is None and not path.is_file():
        return {}
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(path, f"cannot read rationale file ({exc})") from None
    if not isinstance(table, dict):
        raise DatasetError(path, "a rationale file is a JSON object {id: rationale}")
    out = {}
    for key, text in table.items():
        text = text[0] if isinstance(text, list) and text else text
        if isinstance(text, str) and text.strip():
            out[str(key)] = text.strip()
    return out


def _first(table: dict[str, str], keys: Iterable[str]) -> str | None:
    return next((table[k] for k in keys if k in table), None)


def _dataset_dir(src: Path, folder: str) -> tuple[Path, Path]:
    """``(dataset folder, Data folder)`` from SRC = Data, its sub-folder, or the dataset folder."""
    for data_root, candidate in (
        (src, src / _SUBDIR / folder),
        (src.parent, src / folder),
        (src.parent.parent, src),
    ):
        if (candidate / "train.jsonl").is_file() or (candidate / "test.jsonl").is_file():
            return candidate, data_root
    raise DatasetError(src, f"no Mr.Harm {folder}/ folder with train.jsonl or test.jsonl")


def convert(
    src: Path, *, split: str | None = None, dataset: str | None = None, **options: Any
) -> Conversion:
    """Convert one Mr.Harm dataset (``dataset`` harmc, harmp or fhm; ``split`` train or test).

    Options:
        images: Folder the ``image`` / ``img`` paths are relative to (records then carry
            ``image``; a missing file is an error).
        rationales: A rationale file ``{id: text}``, or ``none`` (default: the release's own
            file, train split only).
        duplicates: ``keep`` (default), ``drop`` or ``error`` (see the module docstring).

    Raises:
        ConfigError: unknown dataset, split or option value.
        DatasetError: malformed lines, captions or rationale files.
    """
    check_options("mrharm", options, {"images", "rationales", "duplicates"})
    name = (dataset or "").lower()
    if name not in DATASETS:
        raise ConfigError(f"mrharm: --dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    split = split or "train"
    if split not in ("train", "test"):
        raise ConfigError(f"mrharm: the release has train and test splits, got {split!r}")
    policy = options.get("duplicates", "keep")
    if policy not in ("keep", "drop", "error"):
        raise ConfigError(f"mrharm: duplicates must be keep, drop or error, got {policy!r}")
    folder, data_root = _dataset_dir(src, DATASETS[name][0])
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise DatasetError(path, "data file not found")
    captions = load_captions(folder / "captions.pkl")
    rationales = _rationales(options.get("rationales"), data_root, DATASETS[name][1], split)
    images = Path(options["images"]).expanduser() if options.get("images") else None
    records: list[dict[str, Any]] = []
    seen: dict[str, tuple[int, dict[str, Any]]] = {}
    repeats = exact = missing_captions = 0
    for line, raw in iter_jsonl(path):
        require(raw, ["id", "text"], path, line)
        source_id = str(raw["id"])
        image_field = raw.get("image", raw.get("img"))
        label, fine, target = meme_label(raw, path, line)
        keys = caption_keys(source_id, str(image_field) if image_field else None)
        caption = _first(captions, keys)
        missing_captions += caption is None
        record: dict[str, Any] = {
            "id": source_id,
            "source_id": source_id,
            "text": str(raw["text"]).strip(),
            "caption": caption or "",
            "label": label,
        }
        if fine is not None:
            record["fine_label"] = fine
        if target is not None:
            record["target"] = target
        if images is not None and image_field:
            image = images / str(image_field)
            if not image.is_file():
                raise DatasetError(path, f"image file not found: {image}", line)
            record["image"] = str(image.resolve())
        rationale = _first(rationales, keys)
        if rationale is not None:
            record["rationale"] = rationale
        if source_id in seen:
            repeats += 1
            count, first = seen[source_id]
            exact += raw == first
            if policy == "error":
                raise DatasetError(path, f"duplicate id {source_id!r}", line)
            if policy == "drop":
                continue
            seen[source_id] = (count + 1, first)
            record["id"] = f"{source_id}#{count + 1}"
        else:
            seen[source_id] = (1, raw)
        records.append(record)
    notes = {
        "source": str(path),
        "dataset": name,
        "split": split,
        "duplicate_policy": policy,
        "repeated_ids": repeats,
        "exact_repeats": exact,
        "missing_captions": missing_captions,
        "with_rationale": sum(1 for r in records if "rationale" in r),
    }
    return Conversion(records, notes)

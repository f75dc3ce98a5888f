"""A run folder on disk: ``results.jsonl`` (one record per sample), ``metrics.json``, ``task.yaml``.

Records are appended as samples finish, each line flushed and fsynced, by one writer while the
process holds an exclusive lock on the folder (a second process writing into it is refused). A process
killed mid-write leaves at most a torn last line; :func:`read_records` skips it and
:func:`compact` rewrites the file without it before a resumed run appends again.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from mmagents.errors import ConfigError

__all__ = [
    "METRICS_FILE",
    "RESULTS_FILE",
    "TASK_FILE",
    "FolderLock",
    "ResultsWriter",
    "compact",
    "dedupe",
    "read_records",
    "to_json",
    "write_json_atomic",
    "write_records_atomic",
]

RESULTS_FILE = "results.jsonl"
METRICS_FILE = "metrics.json"
TASK_FILE = "task.yaml"
_LOCK_FILE = ".lock"


def to_json(value: Any) -> Any:
    """Make a runner's output JSON-safe: numpy scalars/arrays, tuples, sets and paths.

    Raises:
        TypeError: a value that has no faithful JSON form (the sample is then recorded as an
            error naming the type, never silently stringified).
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(to_json(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    if type(value).__module__ == "numpy":
        return to_json(value.tolist())
    raise TypeError(
        f"runner returned a value of type {type(value).__name__}, not JSON-serialisable"
    )


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """All parseable records of a results file, and how many lines were torn or corrupt."""
    if not path.is_file():
        return [], 0
    records, bad = [], 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                bad += 1  # a line cut short by kill -9 / power loss
                continue
            if isinstance(record, dict) and "id" in record:
                records.append(record)
            else:
                bad += 1
    return records, bad


def dedupe(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per id: a successful record beats an errored one, later beats earlier."""
    best: dict[str, dict[str, Any]] = {}
    for record in records:
        current = best.get(record["id"])
        if current is None or not (
            current.get("error") is None and record.get("error") is not None
        ):
            best[record["id"]] = dict(record)
    return list(best.values())


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a fsynced temp file and a rename (never a half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_records_atomic(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Replace a results file with ``records`` (temp file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def compact(path: Path, *, keep_errors: bool) -> tuple[list[dict[str, Any]], int]:
    """Rewrite a results file with one record per id and no torn lines.

    Args:
        path: ``results.jsonl``.
        keep_errors: Keep errored records (when ``False`` they are dropped, to be retried).

    Returns:
        The kept records and the number of torn/corrupt lines removed.
    """
    records, bad = read_records(path)
    kept = [r for r in dedupe(records) if keep_errors or r.get("error") is None]
    if path.is_file() and (bad or len(kept) != len(records)):
        write_records_atomic(path, kept)
    return kept, bad


class FolderLock:
    """An exclusive ``flock`` on a run folder, so two processes never write into the same one.

    The OS releases it when the process dies, so a run killed with ``kill -9`` can be resumed.

    Raises:
        ConfigError: another process holds the folder.
    """

    def __init__(self, folder: Path) -> None:
        import fcntl

        folder.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = (folder / _LOCK_FILE).open("w")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._handle.close()
            raise ConfigError(f"another run is writing into {folder}") from None

    def release(self) -> None:
        """Release the lock."""
        self._handle.close()

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lacks_final_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


class ResultsWriter:
    """Appends records to a results file: one JSON line each, flushed and fsynced.

    A thread lock makes appends from several threads safe; hold a :class:`FolderLock` on the
    folder to keep other processes out.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        if _lacks_final_newline(path):
            # A last record written without its newline (an editor, a copied file): the next
            # record would be glued onto it and both would be lost as one corrupt line.
            self._handle.write("\n")
            self._handle.flush()

    def append(self, *records: Mapping[str, Any]) -> None:
        """Append records durably: all lines written, then one flush and one fsync.

        Passing the records that finished together is a group commit: one fsync (milliseconds)
        covers them all instead of one each.
        """
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with self._lock:
            self._handle.write(lines)
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._handle.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

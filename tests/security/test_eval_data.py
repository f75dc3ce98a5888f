"""Finding 6: eval data, results and cache errors never cost data and are never tracebacks."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mmagents._config import Config, RoleConfig
from mmagents.errors import CacheError, DatasetError
from mmagents.eval.cache import CachingBackend, CallCache
from mmagents.eval.results import read_records
from mmagents.eval.runner import run_task

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _runners_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))


def _task(tmp_path: Path, metrics: str = "[accuracy]") -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(
        "task: t\nversion: 1\nrunner: _eval_runners:echo\ntarget: label\nnormalizer: lower\n"
        f"metrics: {metrics}\n",
        encoding="utf-8",
    )
    return path


def _data(tmp_path: Path, labels: list[Any]) -> Path:
    path = tmp_path / "d.jsonl"
    lines = [json.dumps({"id": f"s{i}", "label": v, "guess": "no"}) for i, v in enumerate(labels)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_resume_after_a_last_line_without_newline_loses_nothing(
    tmp_path: Path, config: Config
) -> None:
    task, data = _task(tmp_path), _data(tmp_path, ["no"] * 5)
    run_task(task, config, data=data, out=tmp_path / "r", limit=3, progress=False)
    results = tmp_path / "r" / "results.jsonl"
    results.write_text(results.read_text().rstrip("\n"))  # e.g. saved by an editor
    run_task(task, config, data=data, out=tmp_path / "r", resume=True, progress=False)
    records, torn = read_records(results)
    assert torn == 0 and sorted(r["id"] for r in records) == [f"s{i}" for i in range(5)]


@pytest.mark.parametrize("label", [[1, 2], {"a": 1}, None, 1.5, float("nan"), True, ""], ids=repr)
def test_labels_that_are_not_classes_fail_before_the_run(
    tmp_path: Path, config: Config, label: Any
) -> None:
    task, data = _task(tmp_path), _data(tmp_path, ["no", label, "yes"])
    with pytest.raises(DatasetError, match="s1"):
        run_task(task, config, data=data, out=tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "results.jsonl").exists()


def test_labels_outside_the_declared_label_set_fail(tmp_path: Path, config: Config) -> None:
    task = _task(tmp_path, "[accuracy, {macro_f1: {labels: ['yes', 'no']}}]")
    with pytest.raises(DatasetError, match="maybe"):
        run_task(task, config, data=_data(tmp_path, ["no", "maybe"]), out=tmp_path / "r")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"id": "a", "label": "no", "guess": "no"}\n{"id": "b", "label": "\xff\xfe"}\n', ":2:"),
        (b'{"id": "a", "label": "no", "guess": "no"}\n' + b'{"a":' * 5000 + b"\n", ":2:"),
        (b"", "no records"),
        (b"\n   \n\t\n", "no records"),
    ],
    ids=["invalid-utf8", "deep-json", "empty", "blank"],
)
def test_bad_data_files_are_file_line_errors(
    tmp_path: Path, config: Config, content: bytes, needle: str
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_bytes(content)
    with pytest.raises(DatasetError) as info:
        run_task(_task(tmp_path), config, data=data, out=tmp_path / "r", progress=False)
    assert needle in str(info.value)


@pytest.mark.parametrize("limit", [-2, 0])
def test_a_limit_below_one_is_an_error(tmp_path: Path, config: Config, limit: int) -> None:
    with pytest.raises(DatasetError, match="limit"):
        run_task(
            _task(tmp_path), config, data=_data(tmp_path, ["no"]), out=tmp_path / "r", limit=limit
        )


def _corrupt(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "cache.db"
    if kind == "random":
        path.write_bytes(bytes(range(256)) * 64)
    elif kind == "text":
        path.write_text("not a database\n" * 100)
    elif kind == "truncated":
        good = CallCache(tmp_path / "good.db")
        for i in range(200):
            good.put("llm", f"k{i}", "v" * 100)
        good.close()
        data = (tmp_path / "good.db").read_bytes()
        path.write_bytes(data[: len(data) // 3 + 17])
        for suffix in ("-wal", "-shm"):
            (tmp_path / f"good.db{suffix}").unlink(missing_ok=True)
    elif kind == "directory":
        path.mkdir()
    elif kind == "unwritable":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "cache.db"  # its folder is a file
    return path


@pytest.mark.parametrize("kind", ["random", "text", "truncated", "directory", "unwritable"])
def test_unusable_cache_files_are_cache_errors(tmp_path: Path, kind: str) -> None:
    path = _corrupt(tmp_path, kind)
    try:
        cache = CallCache(path)
    except CacheError as exc:
        assert str(path) in str(exc) and "--no-cache" in str(exc)
        return
    # sqlite may open a truncated file whose first pages are intact: it must then work.
    assert kind == "truncated"
    cache.put("llm", "x", "1")
    assert cache.get("llm", "x") == "1"


def test_a_bad_cache_entry_is_a_miss_and_is_replaced(tmp_path: Path) -> None:
    class Backend:
        calls = 0

        def caption(self, text: str) -> str:
            Backend.calls += 1
            return f"caption of {text}"

    store = CallCache(tmp_path / "c.db")
    proxy = CachingBackend("vlm", RoleConfig("fake", {}), Backend(), store)
    assert proxy.caption("x") == "caption of x" and Backend.calls == 1
    with sqlite3.connect(tmp_path / "c.db") as conn:
        conn.execute('UPDATE calls SET value = \'{"__image__": "!!not base64"}\'')
    assert proxy.caption("x") == "caption of x" and Backend.calls == 2  # recomputed
    assert proxy.caption("x") == "caption of x" and Backend.calls == 2  # and replaced
    assert store.stats()["corrupt"] == 1


def _open_and_write(path: str, worker: int, barrier: Any) -> str:
    """One process's first use of a shared, brand-new cache file, started with the others."""
    barrier.wait()
    try:
        cache = CallCache(path)
    except CacheError as exc:
        return str(exc)
    try:
        cache.put("llm", f"k{worker}", f"v{worker}")
        return cache.get("llm", f"k{worker}") or ""
    finally:
        cache.close()


def test_processes_opening_one_new_cache_at_once_all_succeed(tmp_path: Path) -> None:
    # Two Ray shards once failed here with "database is locked": switching a new file to WAL
    # takes an exclusive lock for which SQLite does not always wait. Eight processes released
    # by one barrier reproduced it in about 3 of 10 rounds before the fix.
    import multiprocessing as mp

    workers = 8
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(workers) as pool:
        for attempt in range(12):
            path = str(tmp_path / f"shared-{attempt}.sqlite")
            barrier = manager.Barrier(workers)
            values = pool.starmap(_open_and_write, [(path, i, barrier) for i in range(workers)])
            assert values == [f"v{i}" for i in range(workers)]
            with sqlite3.connect(path) as conn:
                assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
                assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == workers


def test_opening_retries_a_locked_file_and_gives_up_on_other_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mmagents.eval import cache as cache_module

    calls: list[int] = []

    def locked_twice() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")

    cache_module._with_busy_retry(locked_twice, budget_s=5)
    assert len(calls) == 3

    def broken() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("no such table: calls")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        cache_module._with_busy_retry(broken, budget_s=5)
    assert len(calls) == 1

    def always_locked() -> None:
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        cache_module._with_busy_retry(always_locked, budget_s=0.05)

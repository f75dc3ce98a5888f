"""Scale-out: merge shard folders, and run shards as Ray tasks.

Sharding is plain data parallelism: ``--shard i/N`` runs every N-th sample from ``i``, each shard in
its own folder and process (or machine); ``merge`` then joins the folders into one run, keeping one
record per id, and recomputes the metrics from the merged records.

``--backend ray`` does both for you: it starts one Ray task per shard (on the cluster at
``--ray-address`` / ``$RAY_ADDRESS``, else on a local Ray instance), each writing
``<out>/shards/<i>-of-<N>`` with the ordinary runner, then merges them into ``<out>``. Every shard
keeps its own crash-safe results file, so rerunning with ``--resume`` only redoes what is missing.
All shards share the model-call cache when ``--cache`` points to a file they can all reach.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmagents._config import Config
from mmagents.errors import BackendUnavailableError, ConfigError
from mmagents.eval.results import (
    METRICS_FILE,
    RESULTS_FILE,
    TASK_FILE,
    FolderLock,
    dedupe,
    read_records,
    write_json_atomic,
    write_records_atomic,
)
from mmagents.eval.runner import RunSummary, run_task, summarize
from mmagents.eval.tasks import TaskSpec, load_task, load_task_file

__all__ = ["merge_runs", "run_on_ray", "shard_folder"]


def shard_folder(out: Path, index: int, count: int) -> Path:
    """Where shard ``index`` of ``count`` writes under ``out``."""
    return out / "shards" / f"{index}-of-{count}"


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _sum_cache(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    caches = [p.get("cache", {}) for p in parts]
    return {
        "enabled": any(c.get("enabled") for c in caches),
        "hits": sum(int(c.get("hits", 0)) for c in caches),
        "misses": sum(int(c.get("misses", 0)) for c in caches),
        "uncacheable": sum(int(c.get("uncacheable", 0)) for c in caches),
    }


def merge_runs(folders: Sequence[str | Path], out: str | Path) -> RunSummary:
    """Merge run folders of the same task into ``out`` and recompute the metrics.

    Records are deduplicated by id (a successful record beats an errored one, a later folder beats
    an earlier one). Cache counts are summed; the wall time is the longest shard's (they ran in
    parallel), the shards' own times are kept in ``run.parts``.

    Raises:
        ConfigError: no folders, a folder without ``task.yaml``, or folders of different tasks or
            task versions.
    """
    if not folders:
        raise ConfigError("merge needs at least one run folder")
    paths = [Path(f).expanduser() for f in folders]
    specs = []
    for path in paths:
        if not (path / TASK_FILE).is_file():
            raise ConfigError(f"{path} is not a run folder (no {TASK_FILE})")
        specs.append(load_task_file(path / TASK_FILE))
    versions = {(s.task, str(s.version)) for s in specs}
    if len(versions) > 1:
        raise ConfigError(f"cannot merge runs of different tasks/versions: {sorted(versions)}")
    records: list[dict[str, Any]] = []
    torn = 0
    for path in paths:
        part, bad = read_records(path / RESULTS_FILE)
        records += part
        torn += bad
    merged = dedupe(records)
    parts = [_read_json(path / METRICS_FILE) for path in paths]
    target = Path(out).expanduser()
    with FolderLock(target):
        write_records_atomic(target / RESULTS_FILE, merged)
        (target / TASK_FILE).write_text(specs[-1].to_yaml(), encoding="utf-8")
        run = {
            "merged_from": [str(p) for p in paths],
            "torn_lines_dropped": torn,
            "duplicates_dropped": len(records) - len(merged),
            "parts": [
                {"folder": str(p), "n": m.get("n"), "wall_time_s": m.get("wall_time_s")}
                for p, m in zip(paths, parts, strict=True)
            ],
        }
        wall = max((float(m.get("wall_time_s") or 0.0) for m in parts), default=0.0)
        return summarize(specs[-1], merged, target, _sum_cache(parts), wall, run)


def _ray_shard(
    spec: TaskSpec, config: Config, folder: str, index: int, count: int, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Body of one Ray task: run one shard with the ordinary runner (in the Ray worker)."""
    summary = run_task(spec, config, out=folder, shard=(index, count), progress=False, **kwargs)
    return {"folder": folder, "n": summary.n, "errors": summary.errors}


def run_on_ray(
    task: TaskSpec | str | Path,
    config: Config,
    *,
    out: str | Path,
    shards: int,
    address: str | None = None,
    num_cpus: int | None = None,
    **kwargs: Any,
) -> RunSummary:
    """Run ``shards`` shards of ``task`` as Ray tasks, then merge them into ``out``.

    Args:
        task: Task spec, name or file.
        config: Configuration shipped to every worker.
        out: The merged run folder; shards write ``out/shards/<i>-of-<N>``.
        shards: How many shards (Ray tasks).
        address: Ray cluster address (default ``$RAY_ADDRESS``, else a local instance).
        num_cpus: CPUs of the local instance (ignored when connecting to a cluster).
        **kwargs: Passed to :func:`~mmagents.eval.runner.run_task` in every shard (data, limit,
            concurrency, resume, overwrite, use_cache, cache_path, options).

    Raises:
        BackendUnavailableError: Ray is not installed (``pip install 'mmagents[ray]'``).
    """
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError("Ray is not installed: pip install 'mmagents[ray]'") from exc
    if shards < 1:
        raise ConfigError(f"--shards must be >= 1, got {shards}")
    spec = task if isinstance(task, TaskSpec) else load_task(task, config.home)
    target = Path(out).expanduser().resolve()
    if "data" in kwargs and kwargs["data"] is not None:
        kwargs["data"] = str(Path(kwargs["data"]).expanduser().resolve())
    started = ray.is_initialized()
    if not started:
        init: dict[str, Any] = {"address": address} if address else {"num_cpus": num_cpus}
        ray.init(include_dashboard=False, log_to_driver=False, **init)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_shard)
        begin = time.perf_counter()
        refs = [
            remote.remote(spec, config, str(shard_folder(target, i, shards)), i, shards, kwargs)
            for i in range(shards)
        ]
        ray.get(refs)
        elapsed = time.perf_counter() - begin
    finally:
        if not started:
            ray.shutdown()
    summary = merge_runs([shard_folder(target, i, shards) for i in range(shards)], target)
    summary.info["run"]["ray_wall_time_s"] = round(elapsed, 3)
    write_json_atomic(target / METRICS_FILE, summary.info)
    return summary

"""The evaluation runner: one task over one dataset, crash-safe, cached and concurrent.

The runner knows no task. A pipeline task (``pipeline: NAME`` in its YAML) is run generically: one
runtime (:class:`~mmagents.runtime.Models`, wrapped by this run's call cache when the cache is on)
and one compiled graph per run; each sample's fields are mapped onto the pipeline's input
(``inputs:``), the run's settings (task ``options`` < ``--set``) arrive as the graph's context, and
the record is the output field named by ``prediction:`` plus the ``record:`` fields. A task with a
custom ``runner: module:function`` calls ``fn(sample, *, models, settings) -> {"prediction": ...,
**extras}`` with the run's runtime (or, older, ``fn(sample, config, **options)``) instead. Samples run in a thread pool (``concurrency`` workers). Each finished sample becomes one
record in ``results.jsonl`` (written by the main thread, flushed and fsynced, while the workers go
on); a failing sample becomes a record with ``error: {type, message}``. At the end the task's
metrics are computed over every successful record in the file and written to ``metrics.json``.

Resuming (``resume=True``) rewrites the file without torn lines or errored records, then runs only
the ids that have no successful record yet, so a run killed with ``kill -9`` and resumed ends with
exactly one record per id.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import queue
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmagents._config import Config
from mmagents._registry import import_string
from mmagents.errors import ConfigError, MMAgentsError, TaskError
from mmagents.eval.cache import CallCache, cache_wrap
from mmagents.eval.datasets import check_limit, load_dataset
from mmagents.eval.metrics import METRICS
from mmagents.eval.results import (
    METRICS_FILE,
    RESULTS_FILE,
    TASK_FILE,
    FolderLock,
    ResultsWriter,
    compact,
    read_records,
    to_json,
    write_json_atomic,
)
from mmagents.eval.sample import seeded_sample
from mmagents.eval.tasks import TaskSpec, load_task
from mmagents.graphs import Pipeline, get_pipeline
from mmagents.runtime import Models, Wrap, image_fields

__all__ = [
    "PipelineRunner",
    "RunSummary",
    "RunnerOutputError",
    "cache_wrap",
    "check_runs",
    "compute_metrics",
    "default_cache_path",
    "parse_shard",
    "run_task",
    "select_samples",
    "summarize",
    "takes_runtime",
]

log = logging.getLogger(__name__)

Runner = Callable[..., Mapping[str, Any]]
_RESERVED = ("id", "target", "error", "time_s")


class RunnerOutputError(MMAgentsError):
    """A task runner returned something other than a mapping with a ``prediction``."""


@dataclass
class RunSummary:
    """What a run (or a merge) produced.

    Attributes:
        out: The run folder.
        metrics: The task's metrics (``None`` where undefined).
        n: Records in ``results.jsonl``.
        errors: Records with an error.
        info: The full content of ``metrics.json``.
    """

    out: Path
    metrics: dict[str, float | None]
    n: int
    errors: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 when every sample and metric succeeded, else 1."""
        return 1 if self.errors or self.info.get("metric_errors") else 0


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/N"`` (0-based shard ``i`` of ``N``).

    Raises:
        ConfigError: malformed, or ``i`` outside ``0..N-1``.
    """
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ConfigError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard i/N needs 0 <= i < N, got {text!r}")
    return i, n


def select_samples(
    samples: Sequence[dict[str, Any]],
    limit: int | None = None,
    shard: tuple[int, int] = (0, 1),
    sample: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """The seeded subset ``sample=(N, seed)`` (if given), its first ``limit`` samples, then every
    N-th of them from ``i`` (round-robin shards), so the shards of a limited run together cover
    exactly the unsharded limited run."""
    if sample is not None:
        samples = seeded_sample(samples, *sample)
    chosen = list(samples[:limit] if limit is not None else samples)
    index, count = shard
    return chosen[index::count]


def default_cache_path(config: Config) -> Path:
    """``<cache_dir>/calls.sqlite``: the model-call cache shared by all runs of this home."""
    return config.cache_dir / "calls.sqlite"


def _check_options(runner: Runner, target: str, options: Mapping[str, Any]) -> None:
    try:
        params = inspect.signature(runner).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ConfigError(f"runner {target} does not accept option(s) {unknown}")


def _apply(source: str, output: Mapping[str, Any]) -> Any:
    name, _, transform = source.partition("|")
    value = output.get(name)
    if transform == "len":
        return len(value or [])
    if transform == "present":
        return value is not None
    return value


def check_runs(task: TaskSpec) -> None:
    """Import what runs ``task`` and check its declared mapping against the pipeline's schemas.

    Raises:
        TaskError: an input field, prediction or record field the pipeline does not have.
        ConfigError, ImportError: an unknown pipeline, or a module that does not import.
    """
    if task.runner is not None:
        _load_runner(task)
        return
    pipeline = get_pipeline(str(task.pipeline))
    inputs = set(pipeline.input_schema().model_fields)
    outputs = set(pipeline.output_keys())
    unknown = sorted(set(task.inputs) - inputs)
    if unknown:
        raise TaskError(f"task {task.task!r}: {pipeline.name} has no input field(s) {unknown}")
    used = {str(task.prediction), *(v.partition("|")[0] for v in task.record.values())}
    missing = sorted(used - outputs)
    if missing:
        raise TaskError(f"task {task.task!r}: {pipeline.name} has no output field(s) {missing}")


class PipelineRunner:
    """Runs the samples of a pipeline task: one runtime and one compiled graph for the whole run.

    Args:
        task: A task with ``pipeline:``.
        config: The run's configuration.
        options: Settings overrides (task ``options`` < ``--set``), checked before any sample.
        wrap: The run's call-cache hook (``None``: no cache).
        backends: Ready backends by role (tests, Python callers).

    Raises:
        ConfigError, TaskError: an unknown pipeline, setting or field mapping.
    """

    def __init__(
        self,
        task: TaskSpec,
        config: Config,
        options: Mapping[str, Any],
        *,
        wrap: Wrap | None = None,
        backends: Mapping[str, Any] | None = None,
    ) -> None:
        check_runs(task)
        self.task = task
        self.pipeline: Pipeline = get_pipeline(str(task.pipeline))
        self.models = Models(config, wrap=wrap, **dict(backends or {}))
        self.settings = self.pipeline.settings_for(config, options)
        self.graph = self.pipeline.build(config, models=self.models, settings=self.settings)
        self._images = set(image_fields(self.pipeline.input_schema()))

    def __call__(self, sample: dict[str, Any], config: Config, **_: Any) -> dict[str, Any]:
        """One sample through the graph; the record's ``prediction`` and ``record:`` fields."""
        values: dict[str, Any] = {}
        for name, key in self.task.inputs.items():
            if sample.get(key) is not None:
                value = sample[key]
                values[name] = self.models.store.put(value) if name in self._images else value
        state = self.graph.invoke(self.pipeline.inputs(values), context=self.settings)
        output = self.pipeline.output_of(state)
        record = {"prediction": output.get(str(self.task.prediction))}
        record.update({key: _apply(src, output) for key, src in self.task.record.items()})
        return record


def _load_runner(task: TaskSpec) -> Runner:
    if task.runner is None:
        raise TaskError(f"task {task.task!r} runs a pipeline, not a runner")
    try:
        runner = import_string(task.runner)
    except ImportError as exc:
        raise ConfigError(
            f"task {task.task!r}: cannot import runner {task.runner!r}: {exc}"
        ) from None
    if not callable(runner):
        raise ConfigError(f"task {task.task!r}: runner {task.runner!r} is not callable")
    return runner  # type: ignore[return-value]


def _runner_of(
    spec: TaskSpec,
    config: Config,
    options: Mapping[str, Any],
    store: CallCache | None,
    backends: Mapping[str, Any] | None,
) -> Runner:
    wrap = cache_wrap(store) if store is not None else None
    if spec.runner is None:
        return PipelineRunner(spec, config, options, wrap=wrap, backends=backends)
    runner = _load_runner(spec)
    if not takes_runtime(runner):
        _check_options(runner, spec.runner, options)
        return runner
    models = Models(config, wrap=wrap, **dict(backends or {}))
    fixed = dict(options)

    def with_runtime(sample: dict[str, Any], config: Config, **_: Any) -> Mapping[str, Any]:
        return runner(sample, models=models, settings=fixed)

    return with_runtime


_LEGACY_UNCACHED = (
    "the call cache is off: the runner is fn(sample, config, **options), which builds its own "
    "backends; only a runner fn(sample, *, models, settings) (or a pipeline task) runs on the "
    "run's runtime, where the cache is attached"
)


def _cache_info(task: TaskSpec, store: CallCache | None) -> dict[str, Any]:
    """``metrics.json``'s ``cache``: whether this run's runtime was cached, and its counts."""
    if store is not None:
        return {"enabled": True, **store.stats()}
    if task.runner is not None and not takes_runtime(_load_runner(task)):
        return {"enabled": False, "reason": _LEGACY_UNCACHED}
    return {"enabled": False}


def takes_runtime(runner: Runner) -> bool:
    """Whether a custom runner is ``fn(sample, *, models, settings)`` (it gets the run's runtime,
    call cache included) rather than the older ``fn(sample, config, **options)`` (uncached)."""
    try:
        params = inspect.signature(runner).parameters
    except (TypeError, ValueError):
        return False
    return "models" in params and params["models"].kind is inspect.Parameter.KEYWORD_ONLY


def _evaluate_one(
    runner: Runner,
    sample: dict[str, Any],
    task: TaskSpec,
    config: Config,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """Run one sample; never raises for a sample-level failure (it becomes the record's error)."""
    start = time.perf_counter()
    record: dict[str, Any] = {"id": sample["id"]}
    try:
        output = runner(dict(sample), config, **options)
        if not isinstance(output, Mapping) or "prediction" not in output:
            raise RunnerOutputError(
                f"runner {task.task!r} must return a mapping with 'prediction', got {type(output).__name__}"
            )
        extras = {k: v for k, v in output.items() if k not in _RESERVED}
        record.update(to_json(extras))
        record["error"] = None
    except Exception as exc:  # one sample's failure must not stop the run: it is recorded
        record.update(
            prediction=None, error={"type": type(exc).__name__, "message": str(exc)[:2000]}
        )
    record["target"] = to_json(sample.get(task.target)) if task.target else None
    record["time_s"] = round(time.perf_counter() - start, 6)
    return record


def compute_metrics(
    task: TaskSpec, records: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, float | None], dict[str, str]]:
    """The task's metrics over the successful records (normalised), and any metric failures."""
    normalise = task.build_normalizer()
    ok = []
    for r in records:
        if r.get("error") is None:
            item = dict(r)
            for key in ("prediction", "target", "ranking"):
                if key in item:
                    item[key] = normalise(item[key])
            ok.append(item)
    values: dict[str, float | None] = {}
    failures: dict[str, str] = {}
    for spec in task.metrics:
        try:
            values[spec.key] = METRICS[spec.name](ok, **spec.params)
        except Exception as exc:  # a bad record shape must not lose the others' metrics
            values[spec.key] = None
            failures[spec.key] = f"{type(exc).__name__}: {exc}"
    return values, failures


def _progress(total: int, initial: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="sample",
        disable=not enabled,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=0.5 if sys.stderr.isatty() else 5.0,
    )


def _prepare_folder(out: Path, resume: bool, overwrite: bool) -> tuple[list[dict[str, Any]], int]:
    results = out / RESULTS_FILE
    if resume:
        return compact(results, keep_errors=False)
    if results.exists() and not overwrite:
        raise ConfigError(f"{results} already exists: pass --resume to continue or --overwrite")
    for name in (RESULTS_FILE, METRICS_FILE):
        (out / name).unlink(missing_ok=True)
    return [], 0


def _execute(
    runner: Runner,
    todo: list[dict[str, Any]],
    task: TaskSpec,
    config: Config,
    options: Mapping[str, Any],
    writer: ResultsWriter,
    bar: Any,
    concurrency: int,
) -> Counter[str]:
    """Run ``todo`` in a thread pool; the calling thread writes the records as they finish."""
    errors: Counter[str] = Counter()
    finished: queue.SimpleQueue[Future[dict[str, Any]]] = queue.SimpleQueue()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eval")
    try:
        for sample in todo:
            # Each sample in a copy of this context, so an active trace (--trace) reaches workers.
            context = contextvars.copy_context()
            future = pool.submit(context.run, _evaluate_one, runner, sample, task, config, options)
            future.add_done_callback(finished.put)
        remaining = len(todo)
        while remaining:
            batch = [finished.get()]
            # Group commit: whatever else finished meanwhile shares the same fsync.
            while not finished.empty():
                batch.append(finished.get())
            remaining -= len(batch)
            records = [f.result() for f in batch]
            writer.append(*records)
            for record in records:
                if record["error"] is not None:
                    errors[record["error"]["type"]] += 1
                    bar.set_postfix(errors=sum(errors.values()), refresh=False)
            bar.update(len(records))
    finally:
        # On Ctrl-C, drop what has not started; finished records are already on disk.
        pool.shutdown(wait=True, cancel_futures=True)
    return errors


def summarize(
    task: TaskSpec,
    records: Sequence[Mapping[str, Any]],
    out: Path,
    cache: Mapping[str, Any],
    wall_time_s: float,
    run: Mapping[str, Any],
) -> RunSummary:
    """Compute the metrics of ``records`` and write ``metrics.json`` into ``out``."""
    values, failures = compute_metrics(task, records)
    errored = [r for r in records if r.get("error") is not None]
    info: dict[str, Any] = {
        "task": task.task,
        "version": task.version,
        "runner": task.runs,
        "metrics": values,
        "n": len(records),
        "n_ok": len(records) - len(errored),
        "errors": len(errored),
        "error_types": dict(Counter(r["error"]["type"] for r in errored)),
        "cache": dict(cache),
        "wall_time_s": round(wall_time_s, 3),
        # Sum over all records of the time each sample took (model calls included).
        "sample_time_s": round(sum(float(r.get("time_s") or 0.0) for r in records), 3),
        "run": {**run, "finished_at": datetime.now(UTC).isoformat(timespec="seconds")},
    }
    if failures:
        info["metric_errors"] = failures
    write_json_atomic(out / METRICS_FILE, info)
    return RunSummary(out, values, len(records), len(errored), info)


def run_task(
    task: TaskSpec | str | Path,
    config: Config,
    *,
    out: str | Path,
    data: str | Path | None = None,
    limit: int | None = None,
    shard: tuple[int, int] = (0, 1),
    sample: tuple[int, int] | None = None,
    concurrency: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    use_cache: bool = True,
    cache_path: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    progress: bool = True,
    backends: Mapping[str, Any] | None = None,
) -> RunSummary:
    """Run ``task`` over its dataset and write the run folder ``out``.

    Args:
        task: A task spec, registry name or YAML path.
        config: The configuration the runner and backends use.
        out: The run folder (``results.jsonl``, ``metrics.json``, ``task.yaml``).
        data: Data file or folder (default: the task's ``dataset.path``).
        limit: Use only the first ``limit`` samples.
        sample: ``(N, seed)``: a seeded random subset of N samples, in file order (before
            ``limit``; see :func:`mmagents.eval.sample.seeded_sample`).
        shard: ``(i, N)``: run the i-th of N round-robin shards of the (limited) samples.
        concurrency: Samples in flight at once (threads).
        resume: Keep the successful records already in ``out`` and run the rest.
        overwrite: Discard existing results in ``out``.
        use_cache: Route the run's model calls through the SQLite call cache (attached to this
            run's runtime only; a runner ``fn(sample, config, **options)`` has none and runs
            uncached, which ``metrics.json`` says).
        cache_path: The cache file (default ``config.cache_dir / "calls.sqlite"``).
        options: Runner options (``--model DIR`` → ``model``, ``--set k=v``), over the task's own.
        progress: Show a progress bar on stderr.
        backends: Ready backends by role for a pipeline task's runtime (tests, Python callers).

    Returns:
        The summary; ``summary.exit_code`` is 1 when any sample or metric failed.

    Raises:
        TaskError, DatasetError, ConfigError: before any sample runs (bad task, data, options,
            or a folder that already holds results / is being written by another process).
    """
    started = time.perf_counter()
    spec = task if isinstance(task, TaskSpec) else load_task(task, config.home)
    if concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, got {concurrency}")
    run_options = {**spec.options, **(options or {})}
    legacy = spec.runner is not None and not takes_runtime(_load_runner(spec))
    if legacy and use_cache:
        # No runtime to attach the cache to, and no process-wide hook any more: said, not faked.
        log.warning("task %s: %s", spec.task, _LEGACY_UNCACHED)
    store = (
        CallCache(cache_path or default_cache_path(config)) if use_cache and not legacy else None
    )
    try:
        runner = _runner_of(spec, config, run_options, store, backends)
        # The loader may stop reading at --limit only when no seeded subset is drawn from it all.
        check_limit(limit)
        rows = load_dataset(spec, data, config=config, limit=limit if sample is None else None)
        selection = select_samples(rows, limit, shard, sample)
        out = Path(out).expanduser()
        with FolderLock(out):
            kept, torn = _prepare_folder(out, resume, overwrite)
            (out / TASK_FILE).write_text(spec.to_yaml(), encoding="utf-8")
            done = {r["id"] for r in kept}
            todo = [s for s in selection if s["id"] not in done]
            desc = f"{spec.task}" + (f" [{shard[0]}/{shard[1]}]" if shard[1] > 1 else "")
            bar = _progress(len(selection), len(selection) - len(todo), desc, progress)
            try:
                with ResultsWriter(out / RESULTS_FILE) as writer:
                    errors = _execute(
                        runner, todo, spec, config, run_options, writer, bar, concurrency
                    )
            finally:
                bar.close()
            cache_info = _cache_info(spec, store)
            records, _ = read_records(out / RESULTS_FILE)
            run_info = {
                "ran": len(todo),
                "resumed": len(kept),
                "torn_lines_dropped": torn,
                "new_errors": sum(errors.values()),
                "data": str(spec.data_path(data).resolve()),
                "limit": limit,
                "sample": None if sample is None else {"n": sample[0], "seed": sample[1]},
                "shard": f"{shard[0]}/{shard[1]}",
                "concurrency": concurrency,
                "options": to_json(run_options),
                "profile": config.profile,
                "backends": {role: rc.backend for role, rc in config.roles.items()},
            }
            elapsed = time.perf_counter() - started
            summary = summarize(spec, records, out, cache_info, elapsed, run_info)
    finally:
        if store:
            store.close()
    return summary

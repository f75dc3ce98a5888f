"""mmagents.eval: the evaluation harness shared by every pipeline.

Tasks are versioned YAML files (``eval/tasks/``) naming a dataset loader, a runner
``fn(sample, config, **options) -> {"prediction": ..., **extras}``, a normaliser and metrics; the
runner executes them with bounded concurrency, a SQLite model-call cache, crash-safe resumable
results and per-run ``metrics.json``; reports compare runs side by side::

    from mmagents import load_config
    from mmagents.eval import run_task, write_report

    summary = run_task("meme-harmful", load_config(), data="val.jsonl", limit=20, out="runs/r1")
    print(summary.metrics)                        # {'accuracy': ..., 'macro_f1': ...}
    write_report(["runs/r1"], "reports/r1")

Importing this package is cheap: submodules load on first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmagents._registry import lazy_attributes

if TYPE_CHECKING:
    from mmagents.eval.cache import CallCache, installed
    from mmagents.eval.datasets import load_dataset, load_image_folder, load_jsonl
    from mmagents.eval.metrics import METRICS
    from mmagents.eval.report import write_report
    from mmagents.eval.runner import RunSummary, compute_metrics, run_task
    from mmagents.eval.scale import merge_runs, run_on_ray
    from mmagents.eval.tasks import TaskSpec, list_tasks, load_task, load_task_file, register_task

__all__ = [
    "METRICS",
    "CallCache",
    "RunSummary",
    "TaskSpec",
    "compute_metrics",
    "installed",
    "list_tasks",
    "load_dataset",
    "load_image_folder",
    "load_jsonl",
    "load_task",
    "load_task_file",
    "merge_runs",
    "register_task",
    "run_on_ray",
    "run_task",
    "write_report",
]

_LAZY = {
    "METRICS": "mmagents.eval.metrics:METRICS",
    "CallCache": "mmagents.eval.cache:CallCache",
    "installed": "mmagents.eval.cache:installed",
    "load_dataset": "mmagents.eval.datasets:load_dataset",
    "load_image_folder": "mmagents.eval.datasets:load_image_folder",
    "load_jsonl": "mmagents.eval.datasets:load_jsonl",
    "write_report": "mmagents.eval.report:write_report",
    "RunSummary": "mmagents.eval.runner:RunSummary",
    "compute_metrics": "mmagents.eval.runner:compute_metrics",
    "run_task": "mmagents.eval.runner:run_task",
    "merge_runs": "mmagents.eval.scale:merge_runs",
    "run_on_ray": "mmagents.eval.scale:run_on_ray",
    "TaskSpec": "mmagents.eval.tasks:TaskSpec",
    "list_tasks": "mmagents.eval.tasks:list_tasks",
    "load_task": "mmagents.eval.tasks:load_task",
    "load_task_file": "mmagents.eval.tasks:load_task_file",
    "register_task": "mmagents.eval.tasks:register_task",
}


__getattr__ = lazy_attributes("mmagents.eval", _LAZY, globals())

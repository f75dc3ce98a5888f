"""Reports: compare run folders side by side, as Markdown (+ PNG plots) and one self-contained HTML.

``write_report(["runs/a", "runs/b"], "reports/ab")`` writes ``report.md``, the PNG plots it links,
and ``report.html`` with the same content and the plots embedded as base64 (one file to mail or
attach). Sections: metrics, run facts (n, errors, cache hits, wall time), and for single-label tasks
per-class F1 bars, a confusion matrix per run and, when records carry a ``confidence``, a
reliability diagram; then errors and the samples where runs disagree.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmagents.errors import ConfigError
from mmagents.eval import metrics as M
from mmagents.eval.results import METRICS_FILE, RESULTS_FILE, TASK_FILE, read_records
from mmagents.eval.tasks import TaskSpec, load_task_file

__all__ = ["Run", "load_run", "write_report"]

_MAX_CLASSES = 30  # beyond this, per-class plots stop being readable
_MAX_EXAMPLES = 20


@dataclass
class Run:
    """One run folder, loaded: its facts (``metrics.json``), records and task."""

    name: str
    folder: Path
    info: dict[str, Any]
    records: list[dict[str, Any]]
    task: TaskSpec

    def normalised(self) -> list[dict[str, Any]]:
        """Successful records with prediction and target normalised as the task scores them."""
        normalise = self.task.build_normalizer()
        return [
            {
                **r,
                "prediction": normalise(r.get("prediction")),
                "target": normalise(r.get("target")),
            }
            for r in self.records
            if r.get("error") is None
        ]


def load_run(folder: str | Path, name: str | None = None) -> Run:
    """Load a run folder.

    Raises:
        ConfigError: the folder has no ``task.yaml`` or ``results.jsonl``.
    """
    path = Path(folder).expanduser()
    if not (path / TASK_FILE).is_file() or not (path / RESULTS_FILE).is_file():
        raise ConfigError(f"{path} is not a run folder (needs {TASK_FILE} and {RESULTS_FILE})")
    info: dict[str, Any] = {}
    if (path / METRICS_FILE).is_file():
        info = json.loads((path / METRICS_FILE).read_text(encoding="utf-8"))
    records, _ = read_records(path / RESULTS_FILE)
    return Run(name or path.name, path, info, records, load_task_file(path / TASK_FILE))


def _names(folders: Sequence[Path]) -> list[str]:
    names = [f.name for f in folders]
    if len(set(names)) < len(names):  # same leaf names: qualify with the parent folder
        names = [f"{f.parent.name}/{f.name}" for f in folders]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


# -- content blocks, rendered to both Markdown and HTML ----------------------------------------

Block = tuple[str, Any]


def _table(header: list[str], rows: list[list[Any]]) -> Block:
    return ("table", (header, [[_fmt(c) for c in row] for row in rows]))


def _metric_blocks(runs: Sequence[Run]) -> list[Block]:
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.info.get("metrics", {}) if k not in keys]
    rows = [[k, *(run.info.get("metrics", {}).get(k) for run in runs)] for k in keys]
    return [("h2", "Metrics"), _table(["metric", *(r.name for r in runs)], rows)]


def _facts_blocks(runs: Sequence[Run]) -> list[Block]:
    header = [
        "run",
        "task",
        "version",
        "runner",
        "n",
        "errors",
        "cache hits",
        "cache misses",
        "wall time (s)",
        "data",
    ]
    rows = []
    for run in runs:
        info, cache = run.info, run.info.get("cache", {})
        rows.append(
            [
                run.name,
                run.task.task,
                run.task.version,
                run.task.runs,
                len(run.records),
                sum(r.get("error") is not None for r in run.records),
                cache.get("hits") if cache.get("enabled") else "off",
                cache.get("misses") if cache.get("enabled") else "off",
                f"{info.get('wall_time_s') or 0:.1f}",
                info.get("run", {}).get("data", ""),
            ]
        )
    return [("h2", "Runs"), _table(header, rows)]


def _is_label_task(records: Sequence[dict[str, Any]]) -> bool:
    scalar = (str, int, bool)
    if not records or not all(isinstance(r["target"], scalar) for r in records):
        return False
    return len({r["target"] for r in records}) <= _MAX_CLASSES


def _class_labels(per_run: Sequence[list[dict[str, Any]]]) -> list[Any]:
    return sorted({r["target"] for recs in per_run for r in recs}, key=str)


def _plot_per_class(
    runs: Sequence[Run], per_run: Sequence[list[dict[str, Any]]], labels: list[Any], path: Path
) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) * max(len(runs), 1)), 3.6))
    for i, (run, recs) in enumerate(zip(runs, per_run, strict=True)):
        stats = M.per_class(recs, labels)
        ax.bar(x + i * width, [stats[c]["f1"] for c in labels], width, label=run.name)
    ax.set_xticks(
        x + width * (len(runs) - 1) / 2, [str(c) for c in labels], rotation=30, ha="right"
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title("Per-class F1")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_confusion(run: Run, recs: list[dict[str, Any]], labels: list[Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    names, matrix = M.confusion_matrix(recs, labels)
    size = max(3.5, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), [str(n) for n in names], rotation=45, ha="right")
    ax.set_yticks(range(len(names)), [str(n) for n in names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            colour = "white" if count > peak / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize="small")
    ax.set_title(f"Confusion: {run.name}", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_calibration(
    runs: Sequence[Run], per_run: Sequence[list[dict[str, Any]]], path: Path
) -> bool:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    drawn = False
    for run, recs in zip(runs, per_run, strict=True):
        bins = M.calibration_bins(recs)
        if bins:
            drawn = True
            ax.plot(
                [b[0] for b in bins],
                [b[1] for b in bins],
                marker="o",
                label=f"{run.name} (ECE {_fmt(M.ece(recs))})",
            )
    ax.set_xlabel("stated confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Calibration")
    ax.legend(fontsize="small")
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def _plot_blocks(runs: Sequence[Run], out: Path) -> list[Block]:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    per_run = [run.normalised() for run in runs]
    label_runs = [
        (run, recs) for run, recs in zip(runs, per_run, strict=True) if _is_label_task(recs)
    ]
    if not label_runs:
        return []
    runs_l, recs_l = [r for r, _ in label_runs], [x for _, x in label_runs]
    labels = _class_labels(recs_l)
    blocks: list[Block] = [("h2", "Per class")]
    header = ["class", *(f"{r.name} F1" for r in runs_l), "support"]
    stats = [M.per_class(recs, labels) for recs in recs_l]
    rows = [[c, *(s[c]["f1"] for s in stats), stats[0][c]["support"]] for c in labels]
    blocks.append(_table(header, rows))
    _plot_per_class(runs_l, recs_l, labels, out / "per_class_f1.png")
    blocks.append(("image", ("Per-class F1", out / "per_class_f1.png")))
    blocks.append(("h2", "Confusion matrices"))
    for i, (run, recs) in enumerate(label_runs):
        path = out / f"confusion_{i}_{_slug(run.name)}.png"
        _plot_confusion(run, recs, labels, path)
        blocks.append(("image", (f"Confusion matrix: {run.name}", path)))
    if _plot_calibration(runs_l, recs_l, out / "calibration.png"):
        blocks += [
            ("h2", "Calibration"),
            ("image", ("Reliability diagram", out / "calibration.png")),
        ]
    return blocks


def _error_blocks(runs: Sequence[Run]) -> list[Block]:
    rows = []
    for run in runs:
        errored = [r for r in run.records if r.get("error") is not None]
        for kind, count in Counter(r["error"]["type"] for r in errored).most_common():
            example = next(r for r in errored if r["error"]["type"] == kind)
            rows.append([run.name, kind, count, example["id"], example["error"]["message"][:160]])
    if not rows:
        return []
    return [("h2", "Errors"), _table(["run", "type", "count", "example id", "message"], rows)]


def _example_blocks(runs: Sequence[Run]) -> list[Block]:
    by_run = [{r["id"]: r for r in run.normalised()} for run in runs]
    ids = [i for i in by_run[0] if all(i in other for other in by_run[1:])]
    rows = []
    for sample_id in ids:
        preds = [json.dumps(b[sample_id]["prediction"], ensure_ascii=False)[:80] for b in by_run]
        target = by_run[0][sample_id]["target"]
        wrong = any(not M.is_correct(b[sample_id]["prediction"], target) for b in by_run)
        if len(set(preds)) > 1 or (len(runs) == 1 and wrong):
            rows.append([sample_id, json.dumps(target, ensure_ascii=False)[:80], *preds])
        if len(rows) >= _MAX_EXAMPLES:
            break
    if not rows:
        return []
    title = "Disagreements" if len(runs) > 1 else "Errors of the model (first samples)"
    return [("h2", title), _table(["id", "target", *(r.name for r in runs)], rows)]


# -- rendering --------------------------------------------------------------------------------


def _markdown(title: str, blocks: Sequence[Block], out: Path) -> str:
    lines = [f"# {title}", ""]
    for kind, content in blocks:
        if kind == "h2":
            lines += [f"## {content}", ""]
        elif kind == "p":
            lines += [content, ""]
        elif kind == "table":
            header, rows = content
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "image":
            caption, path = content
            lines += [f"![{caption}]({path.relative_to(out)})", ""]
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
figure { display: inline-block; margin: 0 1em 1em 0; }
img { max-width: 100%; }
"""


def _html(title: str, blocks: Sequence[Block]) -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    for kind, content in blocks:
        if kind == "h2":
            parts.append(f"<h2>{html.escape(content)}</h2>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(content)}</p>")
        elif kind == "table":
            header, rows = content
            parts.append(
                "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
            )
            for row in rows:
                parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
            parts.append("</table>")
        elif kind == "image":
            caption, path = content
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(folders: Sequence[str | Path], out: str | Path) -> dict[str, Path]:
    """Write a report comparing ``folders`` (run folders) into ``out``.

    Returns:
        ``{"markdown": ..., "html": ...}`` plus one entry per plot.

    Raises:
        ConfigError: no folders, or one that is not a run folder.
    """
    if not folders:
        raise ConfigError("report needs at least one run folder")
    paths = [Path(f).expanduser() for f in folders]
    runs = [load_run(p, name) for p, name in zip(paths, _names(paths), strict=True)]
    target = Path(out).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    tasks = sorted({f"{r.task.task} v{r.task.version}" for r in runs})
    title = f"Evaluation report: {', '.join(tasks)}"
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    blocks: list[Block] = [("p", f"Generated {stamp} from {len(runs)} run(s).")]
    blocks += _metric_blocks(runs) + _facts_blocks(runs) + _plot_blocks(runs, target)
    blocks += _error_blocks(runs) + _example_blocks(runs)
    written = {"markdown": target / "report.md", "html": target / "report.html"}
    written["markdown"].write_text(_markdown(title, blocks, target), encoding="utf-8")
    written["html"].write_text(_html(title, blocks), encoding="utf-8")
    for kind, content in blocks:
        if kind == "image":
            written[content[1].stem] = content[1]
    return written

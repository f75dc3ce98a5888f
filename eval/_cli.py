"""``mmagents eval``: run, list, validate, report and merge evaluation tasks.

::

    mmagents eval list
    mmagents eval validate my_task.yaml
    mmagents eval run meme-harmful --data val.jsonl --model DIR --limit 20 --out runs/r1 [--resume]
    mmagents eval run meme-harmful-zero-shot --data val.jsonl --shard 0/4 --out runs/s0
    mmagents eval merge runs/s0 runs/s1 runs/s2 runs/s3 --out runs/all
    mmagents eval run meme-harmful-zero-shot --data val.jsonl --backend ray --shards 4 --out runs/all
    mmagents eval report runs/r1 runs/r2 --out reports/r1-vs-r2
    mmagents eval convert mrharm Mr.Harm/Data --dataset harmc --split train --out harmc.jsonl
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmagents.eval.convert._cli import add_convert_parser

if TYPE_CHECKING:
    from mmagents.eval.runner import RunSummary

__all__ = ["register"]


def register(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Add the ``eval`` sub-commands (run, list, validate, report, merge, convert)."""
    sub = parser.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")
    _add_run(sub.add_parser("run", help="run a task over a dataset", description=_RUN_HELP))
    listing = sub.add_parser("list", help="list the known tasks")
    listing.set_defaults(func=_cmd_list)
    validate = sub.add_parser("validate", help="check task files (YAML, includes, metrics)")
    validate.add_argument("tasks", nargs="+", metavar="FILE_OR_NAME")
    validate.add_argument(
        "--check-runner",
        action="store_true",
        help="also import each runner or pipeline and check its field mapping",
    )
    validate.set_defaults(func=_cmd_validate)
    report = sub.add_parser("report", help="Markdown + HTML report comparing run folders")
    report.add_argument("runs", nargs="+", metavar="DIR")
    report.add_argument("--out", required=True, metavar="DIR")
    report.set_defaults(func=_cmd_report)
    merge = sub.add_parser("merge", help="merge shard folders into one run")
    merge.add_argument("runs", nargs="+", metavar="DIR")
    merge.add_argument("--out", required=True, metavar="DIR")
    merge.set_defaults(func=_cmd_merge)
    add_convert_parser(sub)
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


_RUN_HELP = (
    "Run TASK (a registered name or a YAML file) over its dataset. Records are appended to "
    "OUT/results.jsonl as samples finish; OUT/metrics.json is written at the end. Exit code 1 "
    "when any sample errored."
)


def _add_run(run: argparse.ArgumentParser) -> None:
    run.add_argument("task", metavar="TASK", help="task name (see `eval list`) or YAML file")
    run.add_argument("--data", metavar="PATH", help="data file/folder (default: the task's)")
    run.add_argument("--out", metavar="DIR", help="run folder (default: runs/<task>)")
    run.add_argument("--limit", type=int, metavar="N", help="only the first N samples")
    run.add_argument("--sample", type=int, metavar="N", help="a seeded random subset of N samples")
    run.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of --sample (default 0)"
    )
    run.add_argument("--shard", default="0/1", metavar="i/N", help="run shard i of N (0-based)")
    run.add_argument("--concurrency", type=int, default=1, metavar="K", help="samples in flight")
    run.add_argument("--resume", action="store_true", help="skip ids already done in OUT")
    run.add_argument("--overwrite", action="store_true", help="discard results already in OUT")
    run.add_argument("--no-cache", action="store_true", help="bypass the model-call cache")
    run.add_argument(
        "--cache", metavar="PATH", help="cache file (default: <home>/cache/calls.sqlite)"
    )
    run.add_argument("--model", metavar="DIR", help="model folder passed to the runner as `model`")
    run.add_argument(
        "--descriptors",
        metavar="FILE",
        help="descriptor JSON (class -> descriptors) passed to the runner as `descriptors`",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="runner option (VALUE read as YAML: 3, true, [a, b]); repeatable",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local process, or one Ray task per shard then merge",
    )
    run.add_argument("--shards", type=int, default=2, metavar="N", help="shards with --backend ray")
    run.add_argument(
        "--ray-address", metavar="ADDR", help="Ray cluster (default: $RAY_ADDRESS or local)"
    )
    run.set_defaults(func=_cmd_run)


def _parse_sets(items: Sequence[str]) -> dict[str, Any]:
    import yaml

    from mmagents.errors import ConfigError

    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            options[key.strip()] = raw
    return options


def _print_summary(summary: RunSummary) -> None:
    info = summary.info
    cache = info.get("cache", {})
    print(f"run folder: {summary.out}")
    for key, value in summary.metrics.items():
        shown = "n/a" if value is None else f"{value:.4f}"
        print(f"  {key:<22} {shown}")
    print(f"  {'n':<22} {summary.n}  (errors: {summary.errors})")
    if cache.get("enabled"):
        print(f"  {'cache':<22} hits {cache.get('hits', 0)}, misses {cache.get('misses', 0)}")
    print(f"  {'wall time':<22} {info.get('wall_time_s', 0):.2f} s")
    for key, message in info.get("metric_errors", {}).items():
        print(f"  metric {key} failed: {message}", file=sys.stderr)
    if summary.errors:
        kinds = ", ".join(f"{k} x{v}" for k, v in info.get("error_types", {}).items())
        print(
            f"mmagents: {summary.errors} sample(s) errored ({kinds}); see results.jsonl",
            file=sys.stderr,
        )


def _cmd_run(args: argparse.Namespace) -> int:
    from mmagents.cli import config_from_args
    from mmagents.eval.runner import parse_shard, run_task
    from mmagents.eval.tasks import load_task

    config = config_from_args(args)
    spec = load_task(args.task, config.home)
    options = _parse_sets(args.set)
    if args.model:
        options["model"] = args.model
    if args.descriptors:
        options["descriptors"] = args.descriptors
    out = Path(args.out) if args.out else Path("runs") / spec.task
    common: dict[str, Any] = {
        "data": args.data,
        "limit": args.limit,
        "sample": None if args.sample is None else (args.sample, args.seed),
        "concurrency": args.concurrency,
        "resume": args.resume,
        "overwrite": args.overwrite,
        "use_cache": not args.no_cache,
        "cache_path": args.cache,
        "options": options,
    }
    if args.backend == "ray":
        from mmagents.errors import ConfigError
        from mmagents.eval.scale import run_on_ray

        if args.shard != "0/1":
            raise ConfigError("--backend ray makes its own shards: use --shards N, not --shard")

        summary = run_on_ray(
            spec, config, out=out, shards=args.shards, address=args.ray_address, **common
        )
    else:
        shard = parse_shard(args.shard)
        summary = run_task(
            spec, config, out=out, shard=shard, progress=not args.no_progress, **common
        )
    _print_summary(summary)
    return summary.exit_code


def _cmd_list(args: argparse.Namespace) -> int:
    from mmagents.cli import config_from_args
    from mmagents.errors import TaskError
    from mmagents.eval.tasks import list_tasks, load_task_file

    home = config_from_args(args).home
    for info in list_tasks(home):
        origin = "built-in" if info.builtin else str(info.path)
        try:
            spec = load_task_file(info.path, config_home=home)
            line = f"{info.name:<24} v{spec.version:<3} {spec.description}"
        except TaskError as exc:
            problems = "; ".join(part.strip() for part in str(exc).splitlines()[1:]) or str(exc)
            line = f"{info.name:<24} INVALID: {problems}"
        print(f"{line}  [{origin}]")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from mmagents.cli import config_from_args
    from mmagents.errors import ConfigError, TaskError
    from mmagents.eval.runner import check_runs
    from mmagents.eval.tasks import load_task

    home = config_from_args(args).home
    failed = 0
    for name in args.tasks:
        try:
            spec = load_task(name, home)
            if args.check_runner:
                check_runs(spec)
        except (TaskError, ConfigError, ImportError) as exc:
            failed += 1
            print(f"INVALID {name}: {exc}", file=sys.stderr)
            continue
        metrics = ", ".join(m.key for m in spec.metrics)
        print(f"ok {name}: task {spec.task} v{spec.version}, runs {spec.runs}, metrics {metrics}")
    return 1 if failed else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from mmagents.eval.report import write_report

    paths = write_report(args.runs, args.out)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from mmagents.eval.scale import merge_runs

    summary = merge_runs(args.runs, args.out)
    _print_summary(summary)
    return summary.exit_code

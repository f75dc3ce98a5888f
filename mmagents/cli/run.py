"""``mmagents run NAME``: every pipeline of the table, with flags generated from its input schema.

::

    mmagents run idealgpt --image cat.png --question "What animal?" --set max_rounds=1 --json

Each field of the pipeline's input schema becomes a flag (``choices`` → ``--choices A B``; an image
field takes a file, stored and passed as a handle); ``--set key=value`` sets one of its settings
for this run; ``--thread ID`` checkpoints the run (and resumes an interrupted one). ``--json``
prints exactly one JSON object on stdout, the run's output, whatever the pipeline; without it a
pipeline's presenter (``PRESENTERS``) prints a trace and a summary, or the output is shown as JSON.
The exit code is 1 when the output carries an ``error``.
"""

from __future__ import annotations

import argparse
import json
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from langchain_core.messages import BaseMessage
from pydantic import BaseModel
from rich.console import Console

from mmagents._config import Config
from mmagents._registry import import_string
from mmagents.cli import config_from_args
from mmagents.errors import ConfigError
from mmagents.graphs import PIPELINES, Pipeline, get_pipeline
from mmagents.graphs._run import Update, run_graph, sqlite_checkpointer, thread_config
from mmagents.graphs._settings import PipelineSettings, parse_assignments
from mmagents.runtime import Models, image_fields

__all__ = [
    "PRESENTERS",
    "Presenter",
    "add_input_arguments",
    "execute",
    "jsonable",
    "register",
    "relax_required",
]

#: pipeline name → lazy "module:PresenterClass" (its trace and summary; a fresh instance per
#: run); the other pipelines show their output as JSON.
PRESENTERS: dict[str, str] = {
    "idealgpt": "mmagents.cli.idealgpt:IdealGPTPresenter",
    "comm": "mmagents.cli.comm:CommPresenter",
    "comm-filter": "mmagents.cli.comm:CommFilterPresenter",
    "chat": "mmagents.cli.chat:ChatPresenter",
    "describe": "mmagents.cli.describe:DescribePresenter",
    "meme": "mmagents.cli.meme:MemePresenter",
    "recode": "mmagents.cli.recode:RecodePresenter",
}


class Presenter:
    """How one pipeline looks on the terminal. The default shows the output as JSON.

    Subclasses override what they need: extra CLI-only flags, turning those flags into input
    fields, a live trace, and the closing summary.
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add CLI-only flags (e.g. ``--doc FILE``, ``--out DIR``)."""

    def run_instead(self, args: argparse.Namespace) -> int | None:
        """Handle the command without one pipeline run (e.g. a batch mode over a dataset) and
        return its exit code; ``None`` (the default): run the pipeline once."""
        return None

    def overrides(self, args: argparse.Namespace) -> dict[str, Any]:
        """Settings given by CLI-only flags (e.g. ``--model DIR``); ``--set`` wins over them."""
        return {}

    def prepare(
        self, args: argparse.Namespace, values: dict[str, Any], models: Models
    ) -> dict[str, Any]:
        """Turn CLI-only flags into input fields; ``values`` holds the schema's flags."""
        return values

    def trace(
        self,
        console: Console,
        settings: PipelineSettings,
        given: Mapping[str, Any],
        finished: Mapping[str, Any] | None,
    ) -> Update | None:
        """Print a header and return ``on_update`` for the live trace (``None``: no trace).

        ``given`` is the input as the user typed it (file paths, not handles); ``finished`` is the
        stored state of a checkpointed thread that already finished (nothing will run).
        """
        return None

    def finish(self, console: Console, output: Mapping[str, Any]) -> None:
        """Print the closing summary of a run."""
        console.print_json(json.dumps(output, default=jsonable))


def jsonable(value: Any) -> Any:
    """``json.dumps``'s ``default`` for run outputs: a chat message as ``{"type", "content", ...}``
    (its name, tool calls and tool call id when set), a pydantic model as its JSON fields, any
    other object as its string."""
    if isinstance(value, BaseMessage):
        out: dict[str, Any] = {"type": value.type, "content": value.content}
        for key in ("name", "tool_calls", "tool_call_id"):
            if getattr(value, key, None):
                out[key] = getattr(value, key)
        return out
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)


def _plain(annotation: Any) -> tuple[Any, bool]:
    """``(type, optional)`` with ``X | None`` unwrapped."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return annotation, False


def _dest(name: str) -> str:
    return f"input__{name}"


def add_input_arguments(parser: argparse.ArgumentParser, schema: type[BaseModel]) -> None:
    """One flag per field of ``schema`` (``--field-name``), typed and described from the field."""
    images = set(image_fields(schema))
    group = parser.add_argument_group("inputs", f"the fields of {schema.__name__}")
    for name, info in schema.model_fields.items():
        kind, _ = _plain(info.annotation)
        flag = "--" + name.replace("_", "-")
        help_text = info.description or name
        kwargs: dict[str, Any] = {"dest": _dest(name), "help": help_text}
        if kind is not bool:
            kwargs["metavar"] = name.upper()
        if kind is bool:
            group.add_argument(flag, action="store_true", **kwargs)
            continue
        if get_origin(kind) is list:
            (item,) = get_args(kind) or (str,)
            kwargs.update(nargs="+", metavar=name.upper().rstrip("S") or name.upper())
            kind = item
        if name in images:
            kwargs.update(metavar="PATH", help=f"{help_text}; a file is stored, a handle is used")
        if kind in (int, float, str):
            kwargs["type"] = kind
        else:  # nested structures are given as JSON
            kwargs.update(type=json.loads, help=f"{help_text} (JSON)")
        group.add_argument(flag, required=info.is_required(), **kwargs)


def relax_required(parser: argparse.ArgumentParser, name: str) -> None:
    """Make the generated flag of input field ``name`` optional (a presenter's own flag, e.g.
    ``--doc FILE``, can supply that field instead; the input schema still requires it)."""
    # argparse has no public way to change an added argument; its actions are plain objects.
    for action in parser._actions:
        if action.dest == _dest(name):
            action.required = False


def _values(args: argparse.Namespace, schema: type[BaseModel]) -> dict[str, Any]:
    out = {}
    for name in schema.model_fields:
        value = getattr(args, _dest(name), None)
        if value is not None and value is not False:
            out[name] = value
    return out


def _presenter(name: str) -> Presenter:
    target = PRESENTERS.get(name)
    cls: type[Presenter] = import_string(target) if target else Presenter  # type: ignore[assignment]
    return cls()


def register(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Add one sub-command per pipeline, importing only the selected pipeline's module."""
    sub = parser.add_subparsers(dest="pipeline", metavar="PIPELINE")
    selected = next((a for a in argv if a in PIPELINES), None)
    for name, pipeline in PIPELINES.items():
        command = sub.add_parser(name, help=pipeline.summary, description=pipeline.summary)
        if name != selected:
            continue
        _add_pipeline_arguments(command, pipeline)


def _add_pipeline_arguments(command: argparse.ArgumentParser, pipeline: Pipeline) -> None:
    add_input_arguments(command, pipeline.input_schema())
    settings = pipeline.settings_schema()
    known = ", ".join(f"{k} ({v.default!r})" for k, v in settings.model_fields.items())
    command.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a setting for this run (repeatable): {known}",
    )
    command.add_argument("--json", action="store_true", help="print one JSON object, no trace")
    command.add_argument("--thread", help="checkpoint thread id: resume this run if interrupted")
    command.add_argument(
        "--checkpoint",
        metavar="PATH",
        help=f"SQLite checkpoint file for --thread (default: <home>/checkpoints/{pipeline.name}.sqlite)",
    )
    presenter = _presenter(pipeline.name)
    presenter.add_arguments(command)
    command.set_defaults(func=lambda args: _run_cli(args, pipeline, presenter))


def _run_cli(args: argparse.Namespace, pipeline: Pipeline, presenter: Presenter) -> int:
    code = presenter.run_instead(args)
    if code is not None:
        return code
    if args.checkpoint and not args.thread:
        raise ConfigError("--checkpoint needs --thread ID (the run to start or resume)")
    config = config_from_args(args)
    models = Models(config)
    given = _values(args, pipeline.input_schema())
    values = presenter.prepare(args, dict(given), models)
    checkpoint = None
    if args.thread:
        default = config.home / "checkpoints" / f"{pipeline.name}.sqlite"
        checkpoint = Path(args.checkpoint) if args.checkpoint else default
    return execute(
        pipeline.name,
        config,
        values,
        overrides={**presenter.overrides(args), **parse_assignments(args.set)},
        models=models,
        as_json=args.json,
        thread_id=args.thread,
        checkpoint=checkpoint,
        given=given,
        presenter=presenter,
    )


def execute(
    name: str,
    config: Config,
    values: Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    models: Models | None = None,
    as_json: bool = False,
    thread_id: str | None = None,
    checkpoint: Path | None = None,
    given: Mapping[str, Any] | None = None,
    console: Console | None = None,
    presenter: Presenter | None = None,
) -> int:
    """Run pipeline ``name`` once and print its output (one JSON object, or trace + summary).

    Args:
        name: A pipeline of the table.
        config: The configuration.
        values: The input fields; image fields may be files (they are stored).
        overrides: Settings for this run (strings parsed by field type).
        models: The runtime (default: ``Models(config)``).
        as_json: Print only the output, as one JSON object.
        thread_id: Checkpoint thread: a finished thread shows its stored result, an interrupted
            one resumes.
        checkpoint: The SQLite file of ``thread_id``.
        given: The input as typed (for the trace header; default: ``values``).
        console: Where the trace goes (default: stdout, never wrapped).
        presenter: How the run is shown (default: the pipeline's, from :data:`PRESENTERS`).

    Returns:
        The exit code: 1 when the output carries an error, else 0.

    Raises:
        ConfigError: invalid input or settings, or a thread that holds another input.
    """
    pipeline = get_pipeline(name)
    models = models or Models(config)
    settings = pipeline.settings_for(config, overrides)
    stored = dict(values)
    for field in image_fields(pipeline.input_schema()):
        if stored.get(field) is not None:
            stored[field] = models.store.put(stored[field])
    inputs = pipeline.inputs(stored)
    presenter = presenter or _presenter(name)
    saver = sqlite_checkpointer(checkpoint) if thread_id and checkpoint else None
    try:
        graph = pipeline.build(config, models=models, settings=settings, checkpointer=saver)
        run_inputs, finished = (
            (inputs, None) if saver is None else _thread_status(graph, thread_id or "", inputs)
        )
        on_update = None
        if not as_json:
            # Soft wrap: what the trace prints never depends on the terminal's width.
            console = console or Console(soft_wrap=True)
            on_update = presenter.trace(console, settings, given or values, finished)
        state = finished
        if state is None:
            run_config = thread_config(thread_id if saver is not None else None)
            state = run_graph(
                graph, run_inputs, context=settings, config=run_config, on_update=on_update
            )
    finally:
        if saver is not None:
            saver.conn.close()
    output = pipeline.output_of(state)
    if as_json:
        print(json.dumps(output, default=jsonable))
    else:
        presenter.finish(console or Console(soft_wrap=True), output)
    return 1 if output.get("error") else 0


def _thread_status(
    graph: Any, thread_id: str, inputs: Mapping[str, Any]
) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """``(inputs, None)`` for a new thread, ``(None, None)`` to resume an interrupted one, and
    ``(None, final_state)`` for a thread that already finished this input.

    Raises:
        ConfigError: the thread holds a different input.
    """
    snapshot = graph.get_state(thread_config(thread_id))
    values = snapshot.values or {}
    if not values:
        return inputs, None
    if any(values.get(k) != v for k, v in inputs.items()):
        raise ConfigError(f"thread {thread_id!r} holds another input; use a new --thread id")
    return (None, None) if snapshot.next else (None, values)

"""The ``mmagents`` command line: the presentation layer (argument parsing, rich output, demo).

Start-up stays fast because nothing heavy is imported to parse arguments: each command lives in its
own module, listed below as a lazy ``"module:register"`` target, and only the module of the command
being run is imported. To add a command, add one line to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mmagents._registry import import_string
from mmagents.errors import MMAgentsError

if TYPE_CHECKING:
    from mmagents._config import Config

__all__ = ["COMMANDS", "Register", "config_from_args", "main"]

Register = Callable[[argparse.ArgumentParser, Sequence[str]], None]

#: name → (one-line help, lazy "module:register"). ``register(parser, argv)`` adds the command's
#: arguments and sets ``func``, a callable taking the parsed namespace and returning an exit code.
#: ``argv`` (the full argument list) lets a command register only the sub-command being run.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": (
        "list the model backends and check the active profile",
        "mmagents.cli.commands:register_models",
    ),
    "tools": ("list tools or run one on an image", "mmagents.cli.commands:register_tools"),
    "demo": (
        "run the main job on a bundled photo (offline by default)",
        "mmagents.cli.commands:register_demo",
    ),
    "run": ("run a pipeline graph", "mmagents.cli.run:register"),
    "eval": (
        "evaluation harness: run, list, validate, report, merge",
        "mmagents.eval._cli:register",
    ),
    "finetune": (
        "train students (distillation) and register them",
        "mmagents.finetune._cli:register",
    ),
    "chat": (
        "interactive multimodal chat agent in the terminal",
        "mmagents.serve._cli:register_chat",
    ),
    "serve": (
        "OpenAI-compatible HTTP endpoint for the chat agent",
        "mmagents.serve._cli:register_serve",
    ),
    "mcp": (
        "MCP server (stdio, or streamable HTTP with --http) exposing the role tools",
        "mmagents.serve._cli:register_mcp",
    ),
    "trace": (
        "show a trace written by --trace: span tree, timings, tokens, cache hits",
        "mmagents._trace_show:register",
    ),
}


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    selected = _selected(argv)
    parser = argparse.ArgumentParser(
        prog="mmagents", description="Agentic multimodal reasoning with LangGraph."
    )
    parser.add_argument(
        "--config", metavar="PATH", help="TOML config file (default: $MMAGENTS_CONFIG)"
    )
    parser.add_argument("--profile", help="built-in profile: offline (default), openai, hf")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--trace",
        metavar="FILE",
        help="write OpenTelemetry spans of every model call to FILE (JSONL; also OTLP when "
        "OTEL_EXPORTER_OTLP_ENDPOINT is set); may also follow the command: run/eval run/chat",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, target) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            register: Register = import_string(target)  # type: ignore[assignment]
            register(command, argv)
    return parser


def _selected(argv: Sequence[str]) -> str | None:
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg in ("--config", "--profile"):
            skip_next = True
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def _pop_trace(argv: list[str]) -> tuple[list[str], str | None]:
    """Take ``--trace FILE`` / ``--trace=FILE`` out of ``argv`` wherever it stands, so every
    command (``run NAME``, ``eval run``, ``chat`` ...) accepts it without declaring it."""
    rest: list[str] = []
    trace: str | None = None
    items = iter(argv)
    for arg in items:
        if arg == "--":
            rest += [arg, *items]
            break
        if arg == "--trace":
            trace = next(items, None)
            if trace is None:
                raise SystemExit("mmagents: error: --trace needs a FILE")
        elif arg.startswith("--trace="):
            trace = arg.partition("=")[2]
        else:
            rest.append(arg)
    return rest, trace


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmagents`` console script; returns the exit code."""
    args_list, trace = _pop_trace(list(sys.argv[1:] if argv is None else argv))
    parser = _parser(args_list)
    args = parser.parse_args(args_list)
    trace = trace or args.trace
    if args.version:
        from importlib.metadata import version

        print(f"mmagents {version('mmagents')}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        from mmagents.tracing import tracing_to

        with tracing_to(trace):
            return int(args.func(args) or 0)
    except MMAgentsError as exc:
        print(f"mmagents: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mmagents: interrupted", file=sys.stderr)
        return 130


def config_from_args(args: argparse.Namespace) -> Config:
    """The configuration selected by the global ``--config`` / ``--profile`` flags."""
    from mmagents._config import load_config

    return load_config(getattr(args, "config", None), profile=getattr(args, "profile", None))

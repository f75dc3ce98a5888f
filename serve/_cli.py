"""``mmagents chat``, ``mmagents serve`` and ``mmagents mcp``: argument parsing only.

Each command imports its implementation (LangGraph, FastAPI, the MCP SDK) only when it runs, so
building the parser stays cheap.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["register_chat", "register_mcp", "register_serve"]


def register_chat(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``mmagents chat [--image PATH …] [--thread ID]``."""
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH",
        help="attach an image to the first message (repeatable)",
    )
    parser.add_argument(
        "--thread", metavar="ID", help="resume this conversation (default: a new one)"
    )
    parser.set_defaults(func=_run_chat)


def _port(text: str) -> int:
    """A TCP port number from ``--port`` (1-65535), or an argparse error naming the flag."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def register_serve(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``mmagents serve [--host 127.0.0.1] [--port 8000]``."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    parser.set_defaults(func=_run_serve)


def register_mcp(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``mmagents mcp [--http [--host H] [--port P]]``: an MCP server on stdio or HTTP."""
    parser.add_argument(
        "--http", action="store_true", help="streamable HTTP at /mcp instead of stdio"
    )
    parser.add_argument("--host", default="127.0.0.1", help="with --http (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="with --http (default 8765)")
    parser.set_defaults(func=_run_mcp)


def _run_chat(args: argparse.Namespace) -> int:
    from mmagents.cli import config_from_args
    from mmagents.serve.terminal import run_chat

    return run_chat(config_from_args(args), images=args.image, thread=args.thread)


def _run_serve(args: argparse.Namespace) -> int:
    from mmagents.cli import config_from_args
    from mmagents.serve.openai_app import serve

    return serve(config_from_args(args), host=args.host, port=args.port)


def _run_mcp(args: argparse.Namespace) -> int:
    from mmagents.cli import config_from_args

    if args.http:
        from mmagents.serve.mcp_http import run_http

        return run_http(config_from_args(args), host=args.host, port=args.port)
    from mmagents.serve.mcp_server import run_stdio

    return run_stdio(config_from_args(args))

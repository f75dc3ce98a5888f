"""``mmagents run chat``: one turn of the chat agent from the command line.

::

    mmagents run chat --text "What is in this picture?" --image cat.png

``--text`` and ``--image`` (repeatable) build the user message (images are stored and appear as
``[image img_… attached]`` markers), so ``--messages`` JSON is not needed. The summary shows the
tool calls the agent made and its answer. Conversations that go on over several turns are
``mmagents chat`` (terminal, threads resumed with ``--thread``) and ``mmagents serve``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from rich.console import Console

from mmagents.cli.run import Presenter, relax_required
from mmagents.errors import ConfigError
from mmagents.graphs.chat import user_message
from mmagents.runtime import Models

__all__ = ["ChatPresenter"]


class ChatPresenter(Presenter):
    """``--text`` / ``--image`` as the user message; the turn's tool calls and answer."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--text", help="your message")
        parser.add_argument(
            "--image", action="append", default=[], metavar="PATH", help="attach an image"
        )
        relax_required(parser, "messages")

    def prepare(
        self, args: argparse.Namespace, values: dict[str, Any], models: Models
    ) -> dict[str, Any]:
        if args.text or args.image:
            handles = [models.store.put(path) for path in args.image]
            message = user_message(args.text or "", handles)
            values = {**values, "messages": [*values.get("messages", []), message]}
        if not values.get("messages"):
            raise ConfigError("give --text (and --image PATH), or --messages as JSON")
        return values

    def finish(self, console: Console, output: Mapping[str, Any]) -> None:
        messages: list[BaseMessage] = list(output.get("messages") or [])
        start = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=0)
        for message in messages[start + 1 :]:  # this turn only
            if isinstance(message, AIMessage) and message.tool_calls:
                for call in message.tool_calls:
                    args = json.dumps(call["args"], ensure_ascii=False)
                    console.print(f"  → {call['name']}({args})", markup=False, highlight=False)
            elif isinstance(message, ToolMessage):
                text = " ".join(message.text.split())[:160]
                console.print(f"  ← {message.name}: {text}", markup=False, highlight=False)
        answer = messages[-1].text if messages else ""
        console.print(f"agent> {answer}", markup=False, highlight=False)

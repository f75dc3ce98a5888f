"""The terminal chat: a REPL over :class:`~mmagents.graphs.chat_session.ChatAgent` with rich output.

Answers stream token by token; every tool call and its result is shown as it happens. Commands:
``/image PATH`` attaches an image to the next message, ``/tools`` lists the tools, ``/reset``
forgets the conversation, ``/history`` shows it, ``/quit`` (or Ctrl-D) leaves. Conversations are
threads in SQLite: ``mmagents chat --thread ID`` resumes one after the process has exited.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mmagents.errors import MMAgentsError

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from rich.console import Console

    from mmagents._config import Config
    from mmagents.graphs.chat_session import ChatAgent

__all__ = ["ChatREPL", "run_chat"]

_HELP = """commands:
  /image PATH   attach an image to your next message
  /tools        list the agent's tools
  /history      show this conversation
  /reset        forget this conversation
  /quit         leave (Ctrl-D works too)"""


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ChatREPL:
    """One terminal session on one thread.

    Args:
        agent: The chat agent (its checkpointer keeps the thread).
        thread: The thread id.
        console: Where output goes.
        read: Reads one line of input given the prompt; raises ``EOFError`` at end of input.
    """

    def __init__(
        self, agent: ChatAgent, thread: str, console: Console, read: Callable[[str], str]
    ) -> None:
        self.agent = agent
        self.thread = thread
        self.console = console
        self.read = read
        self.pending: list[str] = []

    # -- commands ------------------------------------------------------------------------------

    def attach(self, source: str) -> None:
        """Put an image into the store; it goes with the next message."""
        from mmagents.images import default_store

        store = default_store(self.agent.config)
        handle = store.put(source.strip())
        width, height = store.get(handle).size
        self.pending.append(handle)
        self.console.print(f"attached {handle} ({width}x{height}); it goes with your next message")

    def show_tools(self) -> None:
        """Print the tools, and the ones left out with the reason."""
        for tool in self.agent.tools:
            self.console.print(f"  [bold]{tool.name}[/bold]  {tool.description}")
        for name, reason in self.agent.omitted.items():
            self.console.print(f"  [dim]{name}  (unavailable: {reason})[/dim]")

    def show_history(self, messages: Sequence[BaseMessage] | None = None) -> None:
        """Print the user and assistant turns of the thread."""
        from langchain_core.messages import AIMessage, HumanMessage

        for message in self.agent.history(self.thread) if messages is None else messages:
            if isinstance(message, HumanMessage):
                self.console.print(f"  you> {_short(message.text, 300)}", markup=False)
            elif isinstance(message, AIMessage) and not message.tool_calls:
                self.console.print(f"  agent> {_short(message.text, 300)}", markup=False)

    def reset(self) -> None:
        """Forget the conversation (the thread id stays)."""
        self.agent.reset(self.thread)
        self.pending.clear()
        self.console.print(f"thread {self.thread} cleared")

    # -- turns ---------------------------------------------------------------------------------

    def ask(self, text: str) -> None:
        """Send one message and show the turn as it happens."""
        from mmagents.graphs.chat_session import (
            AnswerEvent,
            TokenEvent,
            ToolCallEvent,
            ToolResultEvent,
        )

        images, self.pending = self.pending, []
        speaking = False
        for event in self.agent.turn(self.thread, text, images):
            if isinstance(event, TokenEvent):
                if not speaking:
                    self.console.print("agent> ", end="", style="bold green")
                    speaking = True
                self.console.print(event.text, end="", markup=False, highlight=False)
                continue
            if speaking:
                self.console.print()
                speaking = False
            if isinstance(event, ToolCallEvent):
                who = "auto " if event.auto else ""
                self.console.print(
                    f"  → {who}{event.name}({_short(event.args)})", style="cyan", markup=False
                )
            elif isinstance(event, ToolResultEvent):
                style = "red" if event.error_type else "dim"
                label = f"error {event.error_type}: " if event.error_type else ""
                self.console.print(
                    f"  ← {event.name}: {label}{_short(event.content)}", style=style, markup=False
                )
            elif isinstance(event, AnswerEvent) and not event.streamed:
                style = "yellow" if event.finish_reason == "step_limit" else "bold green"
                self.console.print("agent> ", end="", style=style)
                self.console.print(event.text, markup=False, highlight=False)
        if speaking:
            self.console.print()

    def handle(self, line: str) -> bool:
        """Run one input line (command or message); ``False`` means leave."""
        command, _, rest = line.strip().partition(" ")
        if command in ("/quit", "/exit"):
            return False
        if command == "/image":
            if not rest.strip():
                self.console.print("usage: /image PATH")
            else:
                self.attach(rest)
        elif command == "/tools":
            self.show_tools()
        elif command == "/history":
            self.show_history()
        elif command == "/reset":
            self.reset()
        elif command in ("/help", "/?"):
            self.console.print(_HELP, markup=False)
        elif command.startswith("/"):
            self.console.print(f"unknown command {command}; /help lists them", markup=False)
        elif line.strip():
            self.ask(line.strip())
        return True

    def loop(self) -> int:
        """Read and run lines until /quit or end of input."""
        while True:
            try:
                line = self.read("you> ")
            except EOFError:
                self.console.print()
                return 0
            try:
                if not self.handle(line):
                    return 0
            except MMAgentsError as exc:  # one bad turn or path does not end the session
                self.console.print(f"error: {type(exc).__name__}: {exc}", style="red", markup=False)
            except OSError as exc:  # nor does a full disk or an unwritable image folder
                reason = exc.strerror or str(exc)
                where = f" ({exc.filename})" if exc.filename else ""
                self.console.print(
                    f"error: {type(exc).__name__}: {reason}{where}", style="red", markup=False
                )
            except KeyboardInterrupt:
                self.console.print("\n(interrupted)")


def run_chat(
    config: Config,
    *,
    images: Sequence[str] = (),
    thread: str | None = None,
    console: Console | None = None,
    read: Callable[[str], str] | None = None,
    agent: ChatAgent | None = None,
) -> int:
    """Run the terminal chat; returns the exit code.

    Args:
        config: The resolved configuration.
        images: Image files attached to the first message.
        thread: A thread to resume (default: a new one).
        console: Output (default: a rich console on stdout).
        read: Input function (default: :func:`input`, with line editing when available).
        agent: The chat agent (default: one built from ``config``, threads in SQLite).
    """
    from rich.console import Console

    from mmagents.graphs.chat_session import ChatAgent

    console = console or Console(highlight=False)
    if read is None:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
        read = input
    thread_id = thread or uuid.uuid4().hex[:12]
    agent = agent or ChatAgent(config)
    repl = ChatREPL(agent, thread_id, console, read)
    earlier = agent.history(thread_id)
    if earlier:
        turns = sum(1 for m in earlier if m.type == "human")
        console.print(f"resumed thread {thread_id} ({turns} earlier turns):", markup=False)
        repl.show_history(earlier)
    else:
        console.print(
            f"thread {thread_id} — resume later with: mmagents chat --thread {thread_id}",
            markup=False,
        )
    console.print("type a message, or /help", style="dim")
    for path in images:
        repl.attach(path)
    return repl.loop()

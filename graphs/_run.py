"""Running a compiled pipeline graph: the one stream-and-collect loop and the one checkpointer.

:func:`run_graph` streams node updates (for a trace, a progress bar, an SSE stream) and returns the
final state; :func:`sqlite_checkpointer` opens the SQLite saver a run or chat thread resumes from.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from langgraph.checkpoint.sqlite import SqliteSaver

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph.state import CompiledStateGraph

__all__ = ["Update", "run_graph", "sqlite_checkpointer", "thread_config"]

#: ``on_update(node, update)``: called each time a node finishes, with its partial update.
Update = Callable[[str, Mapping[str, Any]], None]


def thread_config(
    thread_id: str | None = None, *, max_concurrency: int | None = None
) -> RunnableConfig:
    """The ``RunnableConfig`` of one run: its checkpoint thread and concurrency cap, if any."""
    config: RunnableConfig = {}
    if thread_id is not None:
        config["configurable"] = {"thread_id": thread_id}
    if max_concurrency is not None:
        config["max_concurrency"] = max_concurrency
    return config


def run_graph(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    inputs: Mapping[str, Any] | None,
    *,
    context: Any = None,
    config: RunnableConfig | None = None,
    on_update: Update | None = None,
) -> dict[str, Any]:
    """Run (or, with ``inputs=None`` and a checkpointed thread, resume) ``graph``.

    Args:
        graph: A compiled pipeline graph.
        inputs: The run's input (validated by the caller), or ``None`` to resume the thread.
        context: The run's settings (the graph's context schema); ``None``: the build-time ones.
        config: The ``RunnableConfig`` (:func:`thread_config`).
        on_update: Called as ``on_update(node, update)`` as each node finishes; parallel nodes
            of one step report one by one.

    Returns:
        The final state (every channel, not only the output schema's keys).
    """
    final: dict[str, Any] = {}
    stream = graph.stream(
        None if inputs is None else dict(inputs),
        config,
        context=context,
        stream_mode=["updates", "values"],
    )
    for mode, raw in stream:
        chunk = cast("Mapping[str, Any]", raw)
        if mode == "values":
            final = dict(chunk)
        elif on_update is not None:
            for node, update in chunk.items():
                if isinstance(update, Mapping):
                    on_update(node, update)
    return final


def sqlite_checkpointer(path: str | Path) -> SqliteSaver:
    """A SQLite checkpointer at ``path`` (its folder created), safe for parallel nodes.

    Close it with ``saver.conn.close()`` when the run is done.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Parallel nodes write their checkpoints from worker threads; SqliteSaver serialises access
    # with its own lock, so the connection may be shared across threads.
    return SqliteSaver(sqlite3.connect(str(path), check_same_thread=False))

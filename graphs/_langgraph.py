"""Graph factories for ``langgraph.json`` (``langgraph dev``, LangGraph Studio, LangGraph Platform).

Each factory takes the ``RunnableConfig`` LangGraph hands it and returns the compiled graph of one
pipeline of the table, over the configuration of the serving process (``$MMAGENTS_CONFIG``,
``$MMAGENTS_PROFILE``, ``MMAGENTS_*`` overrides). A run's settings arrive as its ``context``
(the pipeline's settings schema); image inputs are handles of the server's image store (or paths
on the server's machine).
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from mmagents._config import load_config
from mmagents.graphs import get_pipeline

__all__ = ["chat", "comm", "comm_filter", "describe", "idealgpt", "meme", "recode"]


def _build(name: str) -> CompiledStateGraph[Any, Any, Any, Any]:
    return get_pipeline(name).build(load_config())


def idealgpt(config: RunnableConfig) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The ``idealgpt`` pipeline."""
    return _build("idealgpt")


def meme(config: RunnableConfig) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The ``meme`` pipeline (teacher rationales; a student classifies with ``model`` set)."""
    return _build("meme")


def comm(config: RunnableConfig) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The ``comm`` pipeline."""
    return _build("comm")


def comm_filter(config: RunnableConfig) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The ``comm-filter`` pipeline."""
    return _build("comm-filter")


def describe(config: RunnableConfig) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The ``describe`` pipeline (classification by description)."""
    return _build("describe")


def recode(config: RunnableConfig) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The ``recode`` pipeline (relation ranking with visual cues)."""
    return _build("recode")


def chat(config: RunnableConfig) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The ``chat`` agent (threads are kept by the server's own checkpointer)."""
    return _build("chat")

"""mmagents.graphs: one module per pipeline, and the table of pipelines everything else reads.

:data:`PIPELINES` is plain data: each entry names its module and the module's contract names as
strings, so reading the table imports no graph (and registers nothing). ``mmagents run NAME``, the
harness runner, the chat agent's pipeline tools, the MCP tools and ``langgraph.json`` are all
derived from it and from the schemas it points to::

    from mmagents.graphs import get_pipeline

    idealgpt = get_pipeline("idealgpt")
    graph = idealgpt.build(config, models=Models(config))
    settings = idealgpt.settings(config, {"max_rounds": "1"})
    out = graph.invoke(idealgpt.inputs({"image": handle, "question": "What animal?"}),
                       context=settings)

A pipeline module follows the contract (see ``/work/notes/contract.md`` and ``docs/``): its state,
``<Name>Input`` / ``<Name>Output`` / ``<Name>Settings`` and ``build_<name>_graph(config=None, *,
models=None, settings=None, checkpointer=None) -> CompiledStateGraph``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmagents._registry import import_string
from mmagents.errors import ConfigError

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph
    from pydantic import BaseModel

    from mmagents._config import Config
    from mmagents.graphs._settings import PipelineSettings
    from mmagents.runtime import Models

__all__ = ["PIPELINES", "Pipeline", "get_pipeline"]


@dataclass(frozen=True)
class Pipeline:
    """One row of the table: a pipeline's name and where its contract lives (nothing imported).

    Attributes:
        name: The name users type (``mmagents run NAME``, task YAML ``pipeline:``).
        summary: One line of help.
        module: The graph module, e.g. ``"mmagents.graphs.idealgpt"``.
        builder: ``build_<name>_graph`` in that module.
        input: The pydantic input schema's name (fields become CLI flags and tool arguments).
        output: The output schema's name (a ``TypedDict``: the keys of every result).
        settings: The :class:`~mmagents.graphs._settings.PipelineSettings` subclass's name (the
            graph's context schema; ``--set key=value``).
    """

    name: str
    summary: str
    module: str
    builder: str
    input: str
    output: str
    settings: str

    def attr(self, name: str) -> Any:
        """Import the module and return one of its attributes (``ImportError`` names the entry)."""
        return import_string(f"{self.module}:{name}")

    def on_contract(self) -> bool:
        """Whether the module defines the contract's names yet (ports flip this by porting)."""
        try:
            for name in (self.builder, self.input, self.output, self.settings):
                self.attr(name)
        except ImportError:
            return False
        return True

    def input_schema(self) -> type[BaseModel]:
        """The pydantic model of one run's input."""
        schema: type[BaseModel] = self.attr(self.input)
        return schema

    def output_schema(self) -> type[Any]:
        """The ``TypedDict`` of one run's output."""
        schema: type[Any] = self.attr(self.output)
        return schema

    def settings_schema(self) -> type[PipelineSettings]:
        """The settings class (the graph's ``context_schema``)."""
        schema: type[PipelineSettings] = self.attr(self.settings)
        return schema

    def build(
        self,
        config: Config | None = None,
        *,
        models: Models | None = None,
        settings: PipelineSettings | None = None,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
    ) -> CompiledStateGraph[Any, Any, Any, Any]:
        """Compile the graph (no model loads until a node needs one)."""
        builder = self.attr(self.builder)
        graph: CompiledStateGraph[Any, Any, Any, Any] = builder(
            config, models=models, settings=settings, checkpointer=checkpointer
        )
        return graph

    def settings_for(
        self, config: Config | None = None, overrides: Mapping[str, Any] | None = None
    ) -> PipelineSettings:
        """Defaults < ``[graphs.<name>]`` < ``overrides`` (strings parsed by field type).

        Raises:
            ConfigError: an unknown key or a bad value.
        """
        from mmagents.graphs._settings import resolve_settings

        return resolve_settings(self.settings_schema(), config, overrides)

    def inputs(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate one run's input against the input schema; the dict a graph is invoked with.

        Raises:
            ConfigError: a missing or invalid input field, naming it.
        """
        from pydantic import ValidationError

        try:
            model = self.input_schema().model_validate(dict(values))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(input)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigError(f"invalid input for pipeline {self.name!r}: {problems}") from None
        return model.model_dump(exclude_none=True)

    def output_keys(self) -> tuple[str, ...]:
        """The keys a run's result may carry (the output schema's fields)."""
        schema = self.output_schema()
        return tuple(getattr(schema, "__annotations__", {}))

    def output_of(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """A run's public result: every output key (``None`` when unset), ``error`` only when set.

        This is the one output convention (``mmagents run --json``, tools, the harness).
        """
        out = {key: state.get(key) for key in self.output_keys()}
        if out.get("error") is None:
            out.pop("error", None)
        return out


def _row(name: str, summary: str, module: str, stem: str, prefix: str) -> Pipeline:
    return Pipeline(
        name=name,
        summary=summary,
        module=f"mmagents.graphs.{module}",
        builder=f"build_{stem}_graph",
        input=f"{prefix}Input",
        output=f"{prefix}Output",
        settings=f"{prefix}Settings",
    )


#: name → pipeline. Plain data; importing this module imports no graph module.
PIPELINES: dict[str, Pipeline] = {
    p.name: p
    for p in (
        _row(
            "idealgpt",
            "IdealGPT: sub-question loop for visual QA",
            "idealgpt",
            "idealgpt",
            "IdealGPT",
        ),
        _row("meme", "harmful-meme rationale / student classification", "meme", "meme", "Meme"),
        _row("describe", "classification by description", "describe", "describe", "Describe"),
        _row("recode", "RECODE relation ranking with visual cues", "recode", "recode", "Recode"),
        _row("comm", "CoMM interleaved image-text generation", "comm", "comm", "Comm"),
        _row(
            "comm-filter",
            "CoMM interleaved document scoring and filtering",
            "comm_filter",
            "comm_filter",
            "CommFilter",
        ),
        _row("chat", "tool-using multimodal chat agent", "chat", "chat", "Chat"),
    )
}


def get_pipeline(name: str) -> Pipeline:
    """The table's entry for ``name``.

    Raises:
        ConfigError: an unknown pipeline, listing the known ones.
    """
    try:
        return PIPELINES[name]
    except KeyError:
        raise ConfigError(f"unknown pipeline {name!r}; known: {', '.join(PIPELINES)}") from None

"""The pipeline graphs as LangChain tools, so the chat agent can run a whole pipeline in one call.

A :class:`GraphTool` runs a pipeline of the table (:data:`mmagents.graphs.PIPELINES`) through its
graph: its arguments are the pipeline's input schema with image fields as handles
(:func:`handle_schema`), its result the run's output.

Settings / options come from the config section ``[tools.<tool name>]``, e.g.::

    [tools.classify_image]
    descriptors = "/path/to/descriptors.json"   # published descriptors instead of LLM-written ones
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, PrivateAttr, create_model

from mmagents._registry import import_string
from mmagents.runtime import image_fields
from mmagents.tools._base import MMTool, image_field

__all__ = [
    "ClassifyImageTool",
    "GraphTool",
    "RunIdealGPTTool",
    "handle_schema",
]


def _pipeline(name: str) -> Any:
    # The table lives in the graphs layer above this one; a lazy entry keeps tools/ free of an
    # import of it (and of the pipeline module until a tool over it is built).
    return import_string("mmagents.graphs:get_pipeline")(name)  # type: ignore[operator]


def handle_schema(schema: type[BaseModel]) -> type[BaseModel]:
    """``schema`` as a tool's arguments: its image fields take an image handle (an LLM never sees
    a file path), everything else (types, bounds, descriptions) as declared."""
    images = set(image_fields(schema))
    if not images:
        return schema
    fields: dict[str, Any] = {}
    for name, info in schema.model_fields.items():
        if name in images:
            optional = not info.is_required()
            kind: Any = str | None if optional else str
            handle = image_field(f"Handle of {info.description or 'the image'} (img_...).")
            if optional:
                handle.default = None
            fields[name] = (kind, handle)
        else:
            fields[name] = (info.annotation, info)
    tool_schema: type[BaseModel] = create_model(f"{schema.__name__}Args", **fields)
    return tool_schema


class GraphTool(MMTool):
    """A pipeline of :data:`mmagents.graphs.PIPELINES` as a tool: its arguments are the pipeline's
    input schema (image fields as handles), its result the run's output.

    The graph is built once per tool, on its first call, over the tool's own runtime; settings
    come from ``[graphs.<name>]`` and ``[tools.<tool name>]`` (the latter wins).
    """

    pipeline: str = ""
    _graph: Any = PrivateAttr(default=None)
    _settings: Any = PrivateAttr(default=None)

    def __init__(self, **kwargs: Any) -> None:
        if "args_schema" not in kwargs:
            name = kwargs.get("pipeline") or type(self).model_fields["pipeline"].default
            kwargs["args_schema"] = handle_schema(_pipeline(name).input_schema())
        super().__init__(**kwargs)

    def _table(self) -> Any:
        return _pipeline(self.pipeline)

    def _ready(self, overrides: Mapping[str, Any]) -> tuple[Any, Any]:
        """``(graph, settings)``: built on the first call over the tool's own runtime (its
        backends load when a node first needs them), then reused."""
        if self._graph is None:
            pipeline = self._table()
            self._settings = pipeline.settings_for(self.config, overrides)
            self._graph = pipeline.build(self.config, models=self.models, settings=self._settings)
        return self._graph, self._settings

    def unavailable_reason(self) -> str | None:
        """``None``: building the tool read the pipeline's schema, so its module imports."""
        return None

    def _run(self, **kwargs: Any) -> dict[str, Any]:
        pipeline = self._table()
        graph, settings = self._ready(self.config.section(f"tools.{self.name}"))
        inputs = pipeline.inputs({k: v for k, v in kwargs.items() if v is not None})
        output: dict[str, Any] = pipeline.output_of(graph.invoke(inputs, context=settings))
        return output


class RunIdealGPTTool(GraphTool):
    """``run_idealgpt``: the IdealGPT pipeline as a tool."""

    name: str = "run_idealgpt"
    description: str = (
        "Answer a hard question about an image with the IdealGPT pipeline (it asks itself "
        "sub-questions about the image, then reasons). Slower than answer_question."
    )
    pipeline: str = "idealgpt"


class ClassifyImageTool(GraphTool):
    """``classify_image``: the describe pipeline (classification by description) as a tool."""

    name: str = "classify_image"
    description: str = (
        "Pick which of the given classes an image shows, explained by visual descriptors."
    )
    pipeline: str = "describe"

"""LangChain tools over the roles and over the pipeline graphs (one static table, read lazily).

>>> from mmagents.tools import build_tools
>>> tools = build_tools()            # every registered tool, bound to the active config
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmagents._registry import Registry

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

    from mmagents._config import Config
    from mmagents.runtime import Models

__all__ = ["PIPELINE_TOOLS", "ROLE_TOOLS", "TOOLS", "build_tool", "build_tools", "register_tool"]

#: tool name → lazy factory ``(config) -> BaseTool`` (a tool class works: it takes ``config=``).
#: Installed packages add tools through the ``mmagents.tools`` entry points.
TOOLS: Registry[Any] = Registry("tool", group="mmagents.tools")
_ROLE_TOOLS = {
    "caption": "mmagents.tools.roles:CaptionTool",
    "answer_question": "mmagents.tools.roles:AnswerQuestionTool",
    "score_image_text": "mmagents.tools.roles:ScoreImageTextTool",
    "read_text": "mmagents.tools.roles:ReadTextTool",
    "crop_region": "mmagents.tools.roles:CropRegionTool",
    "generate_image": "mmagents.tools.roles:GenerateImageTool",
    "embed": "mmagents.tools.roles:EmbedTool",
}
#: The tools over the six roles.
ROLE_TOOLS = tuple(sorted(_ROLE_TOOLS))

#: The pipeline graphs as tools. Registered here, never by a graph module when it is imported,
#: so the tool list is the same in every process whatever was imported before.
_PIPELINE_TOOLS = {
    "run_idealgpt": "mmagents.tools.pipelines:RunIdealGPTTool",
    "classify_meme": "mmagents.tools.meme:ClassifyMemeTool",  # the finetuned meme student
    "classify_image": "mmagents.tools.pipelines:ClassifyImageTool",
}
for _name, _target in {**_ROLE_TOOLS, **_PIPELINE_TOOLS}.items():
    TOOLS.register(_name, _target)

#: The tools that run a whole pipeline.
PIPELINE_TOOLS = tuple(sorted(_PIPELINE_TOOLS))


def register_tool(name: str, target: Any, *, replace: bool = False) -> None:
    """Register a tool factory: an object or a lazy ``"module:Attr"`` taking ``config=``."""
    TOOLS.register(name, target, replace=replace)


def build_tool(
    name: str, config: Config | None = None, *, models: Models | None = None
) -> BaseTool:
    """Build the tool ``name`` bound to ``config`` (backends still load lazily).

    ``models``: the runtime a built-in tool (an :class:`~mmagents.tools._base.MMTool`) calls;
    default: its own, made on first use. Other factories get ``config=`` only.
    """
    from mmagents._config import load_config
    from mmagents.tools._base import MMTool

    factory = TOOLS.get(name)
    cfg = models.config if models is not None and config is None else (config or load_config())
    if models is not None and isinstance(factory, type) and issubclass(factory, MMTool):
        tool: BaseTool = factory(config=cfg, models=models)
    else:
        tool = factory(config=cfg)
    return tool


def build_tools(
    config: Config | None = None, names: list[str] | None = None, *, models: Models | None = None
) -> list[BaseTool]:
    """Build the tools ``names`` (default: all registered) bound to ``config``, over one runtime
    (``models``, default: a new :class:`~mmagents.runtime.Models` of ``config``) that they share,
    so the caption and question tools reach one vlm and one image store."""
    from mmagents._config import load_config
    from mmagents.runtime import Models

    shared = models or Models(config or load_config())
    return [build_tool(name, shared.config, models=shared) for name in (names or TOOLS.names())]

"""What every mmagents tool shares: a config, a runtime (lazy roles, image store) and handles.

A tool declares its name, description and typed input schema once (pydantic ``args_schema``);
images are passed as handles (``img_...``) that resolve through the :class:`ImageStore`, so an LLM
only ever sees a short string. Backends load on the first call, not when the tool is built, into
the tool's runtime (:class:`~mmagents.runtime.Models`): its own unless one is given
(``models=``), never a process-wide table.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, PrivateAttr

from mmagents._config import Config, load_config
from mmagents.images import ImageStore
from mmagents.runtime import Models

__all__ = ["HANDLE_DESCRIPTION", "MMTool", "image_field"]

HANDLE_DESCRIPTION = "Image handle such as img_3fa2c1d9e0b7a6f1 (from the conversation or a tool)."


def image_field(description: str = HANDLE_DESCRIPTION) -> Any:
    """A pydantic field for an image handle argument."""
    return Field(description=description, pattern=r"^img_[0-9a-f]{16}$")


class MMTool(BaseTool):
    """Base class of the role tools: resolves the config, the runtime and its role backends.

    Args:
        config: The configuration (default: the environment's).
        models: The runtime to call (default: a :class:`Models` of ``config`` made on first use,
            kept by this tool); pass one to share backends and the image store between tools.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: Config = Field(default_factory=load_config, exclude=True)
    #: The role whose backend this tool calls (shown by ``mmagents tools list``).
    role_name: str = ""
    _models: Models | None = PrivateAttr(default=None)

    def __init__(self, *, models: Models | None = None, **kwargs: Any) -> None:
        if models is not None and "config" not in kwargs:
            kwargs["config"] = models.config
        super().__init__(**kwargs)
        self._models = models

    @property
    def models(self) -> Models:
        """This tool's runtime (made on first use when none was given)."""
        if self._models is None:
            self._models = Models(self.config)
        return self._models

    @property
    def store(self) -> ImageStore:
        """The image store handles resolve against (the runtime's)."""
        return self.models.store

    def backend(self) -> Any:
        """The backend of :attr:`role_name` in this tool's runtime (built on first use)."""
        return self.models[self.role_name]

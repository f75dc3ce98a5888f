"""What every mmagents tool shares: a config, lazy role access, and image handles.

A tool declares its name, description and typed input schema once (pydantic ``args_schema``);
images are passed as handles (``img_...``) that resolve through the :class:`ImageStore`, so an LLM
only ever sees a short string. Backends load on the first call, not when the tool is built.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field

from mmagents._config import Config, load_config
from mmagents.images import ImageStore, default_store

__all__ = ["HANDLE_DESCRIPTION", "MMTool", "image_field"]

HANDLE_DESCRIPTION = "Image handle such as img_3fa2c1d9e0b7a6f1 (from the conversation or a tool)."


def image_field(description: str = HANDLE_DESCRIPTION) -> Any:
    """A pydantic field for an image handle argument."""
    return Field(description=description, pattern=r"^img_[0-9a-f]{16}$")


class MMTool(BaseTool):
    """Base class of the role tools: resolves the config, the image store and role backends."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: Config = Field(default_factory=load_config, exclude=True)
    #: The role whose backend this tool calls (shown by ``mmagents tools list``).
    role_name: str = ""

    @property
    def store(self) -> ImageStore:
        """The image store handles resolve against."""
        return default_store(self.config)

    def backend(self) -> Any:
        """The configured backend of :attr:`role_name` (loaded once per process)."""
        from mmagents.models import load_role

        return load_role(self.role_name, self.config)

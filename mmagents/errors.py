"""Typed errors raised by mmagents.

Every failure a user can cause or meet (bad config, bad image, a model that does not answer in the
requested schema, a dead endpoint) has its own exception type so callers can handle it precisely;
nothing is swallowed into a result string.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "ConfigError",
    "ImageError",
    "ImageTooLargeError",
    "MMAgentsError",
    "RemoteImageRefusedError",
    "StructuredOutputError",
    "UnknownHandleError",
]


class MMAgentsError(Exception):
    """Base class of every error raised by mmagents."""


class ConfigError(MMAgentsError):
    """The configuration file, a profile or an environment override is invalid."""


class BackendError(MMAgentsError):
    """A model backend failed while loading or running."""


class BackendUnavailableError(BackendError):
    """A backend cannot be used here: its optional package or its weights are missing."""


class ImageError(MMAgentsError):
    """An image could not be loaded: corrupt bytes, unsupported format, unreadable file."""


class ImageTooLargeError(ImageError):
    """An image exceeds the configured pixel or byte limit (decompression-bomb guard)."""


class RemoteImageRefusedError(ImageError):
    """A remote URL was given but remote images are disabled in the configuration."""


class UnknownHandleError(ImageError, KeyError):
    """An image handle is not present in the image store."""


class StructuredOutputError(MMAgentsError):
    """A model's output did not validate against the requested schema after all repair attempts.

    Attributes:
        schema_name: Name of the pydantic schema that was requested.
        raw: The last raw text the model produced.
        attempts: How many generations were tried (first try plus repairs).
        detail: The last validation error, as text.
    """

    def __init__(self, schema_name: str, raw: str, attempts: int, detail: str) -> None:
        self.schema_name = schema_name
        self.raw = raw
        self.attempts = attempts
        self.detail = detail
        super().__init__(
            f"model output did not validate as {schema_name} after {attempts} attempt(s): "
            f"{detail}; last output: {raw[:200]!r}"
        )

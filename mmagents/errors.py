"""Typed errors raised by mmagents.

Every failure a user can cause or meet (bad config, bad image, a model that does not answer in the
requested schema, a dead endpoint) has its own exception type so callers can handle it precisely;
nothing is swallowed into a result string.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "CacheError",
    "ConfigError",
    "DatasetError",
    "EndpointError",
    "ImageError",
    "ImageSourceRefusedError",
    "ImageTooLargeError",
    "MCPServerError",
    "MCPToolError",
    "MMAgentsError",
    "RationaleLeakError",
    "RemoteImageRefusedError",
    "StructuredOutputError",
    "TaskError",
    "UnknownHandleError",
    "client_message",
]


class MMAgentsError(Exception):
    """Base class of every error raised by mmagents."""


class ConfigError(MMAgentsError):
    """The configuration file, a profile or an environment override is invalid."""


class TaskError(ConfigError):
    """An evaluation task file is invalid (bad YAML, unknown metric, include cycle, ...)."""


class DatasetError(MMAgentsError):
    """A dataset file or one of its records is invalid.

    Attributes:
        path: The file (or folder) that was being read.
        line: The 1-based line of the bad record, when there is one.
    """

    def __init__(self, path: object, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


class CacheError(MMAgentsError):
    """The model-call cache file cannot be used (not a database, a directory, unwritable)."""


class BackendError(MMAgentsError):
    """A model backend failed while loading or running."""


class BackendUnavailableError(BackendError):
    """A backend cannot be used here: its optional package or its weights are missing."""


class EndpointError(BackendError):
    """A remote model endpoint (an OpenAI-compatible server) failed: unreachable, timed out, or
    answered with an HTTP error.

    Attributes:
        url: The endpoint's base URL.
        status_code: The HTTP status, when the server answered at all.
    """

    def __init__(
        self, url: str, detail: str, status_code: int | None = None, *, public: str | None = None
    ) -> None:
        self.url = url
        self.status_code = status_code
        #: What a remote client of ours may be told: no URL, no host, no server text.
        self.public = public or (
            f"the model endpoint answered HTTP {status_code}"
            if status_code is not None
            else "the model endpoint failed"
        )
        super().__init__(f"endpoint {url}: {detail}")


class MCPServerError(BackendError):
    """An MCP server the chat agent uses (``[mcp.servers.NAME]``) cannot be started or reached,
    died, or failed a call in transport.

    Attributes:
        server: The server's name in the config.
    """

    def __init__(self, server: str, detail: str) -> None:
        self.server = server
        super().__init__(f"MCP server {server!r}: {detail}")


class MCPToolError(MMAgentsError):
    """A tool of an MCP server answered with an error (``isError``).

    Attributes:
        server: The server's name in the config.
        tool: The tool's name on that server.
    """

    def __init__(self, server: str, tool: str, message: str) -> None:
        self.server, self.tool = server, tool
        super().__init__(f"{tool} on MCP server {server!r}: {message}")


class ImageError(MMAgentsError):
    """An image could not be loaded: corrupt bytes, unsupported format, unreadable file."""


class ImageTooLargeError(ImageError):
    """An image exceeds the configured pixel or byte limit (decompression-bomb guard)."""


class ImageSourceRefusedError(ImageError):
    """A client named an image source it may not use (a server file path, a path outside the
    allowed roots). The message is the same whether or not such a file exists."""


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


class RationaleLeakError(MMAgentsError):
    """A teacher rationale states the gold label in every sentence, even after a rewrite.

    Attributes:
        rationale: The last rationale the model wrote.
        terms: The label terms found in it.
    """

    def __init__(self, rationale: str, terms: list[str]) -> None:
        self.rationale = rationale
        self.terms = terms
        super().__init__(
            f"rationale states the label in every sentence ({', '.join(dict.fromkeys(terms))}): "
            f"{rationale[:200]!r}"
        )


def client_message(exc: BaseException) -> str:
    """What a remote client (HTTP API, MCP) may be told about ``exc``.

    Our own errors describe the client's input and are safe, except :class:`EndpointError`,
    whose text names an internal URL: it is reduced to its public summary. Anything else is an
    internal failure: only its type is named (the full error goes to the server log).
    """
    if isinstance(exc, EndpointError):
        return exc.public
    if isinstance(exc, MMAgentsError):
        return f"{type(exc).__name__}: {exc}"
    return f"internal error ({type(exc).__name__}); see the server log"

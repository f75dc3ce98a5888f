"""Other MCP servers' tools as tools of the chat agent (the MCP client side; off unless configured).

Each server listed under ``[mcp.servers.NAME]`` is started (stdio) or reached (streamable HTTP)
when the chat agent is built; every tool it lists becomes a LangChain tool named
``<prefix><tool>`` (prefix ``NAME_`` by default) with the server's own description and JSON input
schema::

    [mcp.servers.vision]
    command = ["mmagents", "mcp"]          # stdio: a program and its arguments
    env = {MMAGENTS_VLM__BACKEND = "hf"}   # added to a minimal environment (HOME, PATH, SHELL, TERM)
    # url = "http://127.0.0.1:8765/mcp"    # or streamable HTTP
    # bearer_env = "VISION_MCP_KEY"        # sends Authorization: Bearer $VISION_MCP_KEY
    tools = ["crop_region", "caption"]     # only these (default: all it lists)
    timeout = 60                           # seconds per call; connect_timeout for the start

**Images.** Image content a server returns is put into the local image store; the tool's result
then names the handles (``"images": ["img_..."]``), so the planner can pass them to local tools.
A server that offers ``put_image`` (as ``mmagents mcp`` does) receives the local images an
argument names: each handle is sent once per connection as a ``data:`` URL, and the handle the
server answers with replaces it (mmagents' handles are content hashes, so it is the same string).

**Errors.** A server that cannot be started or reached, or that dies later, raises
:class:`~mmagents.errors.MCPServerError` naming it (at build time, or from the tool call, which
the chat agent hands to the planner as a typed error); a tool that answers ``isError`` raises
:class:`~mmagents.errors.MCPToolError` with the server's message.

Nothing happens at import, and without ``[mcp.servers]`` the ``mcp`` package is not even imported:
the agent's tool list is the same in every process unless configured. Connections are made once
per process per server configuration, run in one background event-loop thread each, and are
closed at exit.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import io
import json
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmagents._config import Config, validate_section
from mmagents.errors import ConfigError, MCPServerError, MCPToolError
from mmagents.images import ImageStore, default_store, is_handle

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

__all__ = ["MCPConnection", "MCPServerSettings", "close_all", "mcp_servers", "mcp_tools"]

SECTION = "mcp"
_CONNECTION_CLOSED = -32000  # mcp.types.CONNECTION_CLOSED (not imported: mcp loads lazily)
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


class MCPServerSettings(BaseModel):
    """One ``[mcp.servers.NAME]`` table: a stdio ``command`` or a streamable-HTTP ``url``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: tuple[str, ...] | None = Field(
        None, min_length=1, description="Program and arguments."
    )
    url: str | None = Field(None, pattern=r"^https?://", description="Streamable HTTP endpoint.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment (stdio).")
    cwd: str | None = Field(None, description="Working directory of the command (stdio).")
    bearer_env: str | None = Field(
        None, description="Environment variable holding the bearer key sent to the url."
    )
    tools: tuple[str, ...] | None = Field(None, description="Only these tools (default: all).")
    prefix: str | None = Field(None, description="Tool name prefix (default: '<NAME>_').")
    timeout: float = Field(60.0, gt=0, description="Seconds one tool call may take.")
    connect_timeout: float = Field(30.0, gt=0, description="Seconds to start and list tools.")

    @model_validator(mode="after")
    def _one_transport(self) -> MCPServerSettings:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command (stdio) and url (streamable HTTP)")
        return self


def mcp_servers(config: Config) -> dict[str, MCPServerSettings]:
    """The configured servers by name (empty without ``[mcp.servers]``).

    Raises:
        ConfigError: an unknown key, a bad value or a bad server name.
    """
    section = config.section(SECTION)
    if unknown := sorted(set(section) - {"servers"}):
        raise ConfigError(f"unknown key(s) in [mcp]: {', '.join(unknown)}; known: servers")
    servers = section.get("servers", {})
    out: dict[str, MCPServerSettings] = {}
    for name, values in servers.items():
        if not _NAME.match(name) or not isinstance(values, dict):
            raise ConfigError(
                f"[mcp.servers.{name}]: a server needs a table and a name of letters, digits, "
                "'_' or '-' (at most 40)"
            )
        out[name] = validate_section(
            MCPServerSettings, values, f"mcp.servers.{name}", config.origins
        )
    return out


class MCPConnection:
    """One live client session with an MCP server, driven from any thread.

    The session runs as a task in a private event-loop thread (an anyio blocking portal); tool
    calls are handed to it. :meth:`tools` lists the server's tools as LangChain tools.

    Raises (from the constructor):
        MCPServerError: the server could not be started, reached or initialised in time.
    """

    def __init__(self, name: str, settings: MCPServerSettings, store: ImageStore) -> None:
        import anyio.from_thread

        self.name, self.settings, self.store = name, settings, store
        self._ready = threading.Event()
        self._client: Any = None
        self._listed: list[Any] = []
        self._stop: Any = None
        self._broken: str | None = None  # why the session is unusable though its task runs
        self._sent: dict[str, str] = {}  # local handle -> the server's handle
        self._sent_lock = threading.Lock()
        self._portal_cm: AbstractContextManager[BlockingPortal] = (
            anyio.from_thread.start_blocking_portal()
        )
        self._portal = self._portal_cm.__enter__()
        self._task: Future[None] = self._portal.start_task_soon(self._serve)
        if not self._ready.wait(settings.connect_timeout):
            self.close()
            raise MCPServerError(
                name, f"no answer within {settings.connect_timeout:g} s (connect_timeout)"
            )
        if self._task.done():
            cause = _cause(self._task)
            self.close()
            raise MCPServerError(name, f"could not start or connect: {cause}")

    # -- the session task (runs in the portal's event loop) -------------------------------------

    def _target(self) -> Any:
        from mcp.client.stdio import StdioServerParameters, get_default_environment

        s = self.settings
        if s.command is not None:
            env = {**get_default_environment(), **s.env}
            return StdioServerParameters(
                command=s.command[0], args=list(s.command[1:]), env=env, cwd=s.cwd
            )
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        headers = {}
        if s.bearer_env:
            key = os.environ.get(s.bearer_env)
            if not key:
                raise MCPServerError(self.name, f"bearer_env {s.bearer_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        assert s.url is not None
        return streamable_http_client(s.url, http_client=create_mcp_http_client(headers=headers))

    async def _serve(self) -> None:
        import anyio
        import mcp

        self._stop = anyio.Event()
        try:
            async with mcp.Client(
                self._target(), read_timeout_seconds=self.settings.timeout
            ) as client:
                listed, cursor = [], None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    listed.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self._client, self._listed = client, listed
                self._ready.set()
                await self._stop.wait()
        finally:
            self._client = None
            self._ready.set()  # wakes a constructor waiting on a failed start

    # -- calls (any thread) -----------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Whether the session is still running."""
        return self._client is not None and not self._task.done() and self._broken is None

    def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """Call ``tool`` and return the raw ``CallToolResult``.

        Raises:
            MCPServerError: the server is gone, or the call failed in transport or timed out.
        """
        if not self.alive:
            why = self._broken or _cause(self._task)
            raise MCPServerError(self.name, f"is not running ({why})")
        client = self._client

        async def run() -> Any:
            return await client.call_tool(tool, arguments)

        try:
            return self._portal.call(run)
        except Exception as exc:  # transport failures, timeouts, a closed session
            if getattr(exc, "code", None) == _CONNECTION_CLOSED:
                self._broken = f"the connection closed during {tool}"
            if not self.alive:
                why = self._broken or _cause(self._task)
                raise MCPServerError(self.name, f"stopped during {tool}: {why}") from exc
            raise MCPServerError(self.name, f"{tool} failed: {type(exc).__name__}: {exc}") from exc

    def tools(self) -> list[BaseTool]:
        """The server's tools (those ``tools`` allows) as LangChain tools."""
        prefix = self.name + "_" if self.settings.prefix is None else self.settings.prefix
        wanted = None if self.settings.tools is None else set(self.settings.tools)
        listed = {t.name: t for t in self._listed}
        if wanted is not None and (missing := sorted(wanted - set(listed))):
            raise MCPServerError(self.name, f"lists no tool {', '.join(missing)}")
        out: list[BaseTool] = []
        for remote in self._listed:
            if wanted is not None and remote.name not in wanted:
                continue
            schema = dict(remote.input_schema or {"type": "object", "properties": {}})
            schema.setdefault("title", remote.name)  # a JSON-schema args_schema needs a title
            out.append(
                StructuredTool(
                    name=f"{prefix}{remote.name}",
                    description=(remote.description or remote.name)
                    + f" (tool {remote.name!r} of MCP server {self.name!r})",
                    args_schema=schema,
                    func=_runner(self, remote.name),
                    metadata={"mcp_server": self.name, "mcp_tool": remote.name},
                )
            )
        return out

    def run_tool(self, tool: str, arguments: dict[str, Any]) -> Any:
        """Call ``tool`` with local image handles sent over; its result as JSON-able data.

        Raises:
            MCPServerError: see :meth:`call`.
            MCPToolError: the tool answered with ``isError``.
        """
        result = self.call(tool, self._send_images(arguments))
        texts = [c.text for c in result.content if getattr(c, "type", "") == "text"]
        images = [
            self.store.put(base64.b64decode(c.data))
            for c in result.content
            if getattr(c, "type", "") == "image"
        ]
        if result.is_error:
            raise MCPToolError(self.name, tool, "\n".join(texts) or "the tool reported an error")
        body: Any = result.structured_content
        if body is None:
            text = "\n".join(texts)
            try:
                body = json.loads(text)
            except ValueError:
                body = text
        if not images:
            return body
        return {"result": body, "images": images}

    def _send_images(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Arguments with local image handles replaced by the server's (sent via put_image)."""
        if not any(t.name == "put_image" for t in self._listed):
            return arguments

        def swap(value: Any) -> Any:
            if isinstance(value, str) and is_handle(value):
                return self._remote_handle(value)
            if isinstance(value, list):
                return [swap(v) for v in value]
            if isinstance(value, dict):
                return {k: swap(v) for k, v in value.items()}
            return value

        return {k: swap(v) for k, v in arguments.items()}

    def _remote_handle(self, handle: str) -> str:
        with self._sent_lock:
            if handle in self._sent:
                return self._sent[handle]
        try:
            image = self.store.get(handle)
        except KeyError:
            return handle  # not ours: perhaps the server's own handle
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        result = self.call("put_image", {"source": url})
        remote = (result.structured_content or {}).get("image")
        if result.is_error or not isinstance(remote, str):
            raise MCPToolError(self.name, "put_image", f"could not send image {handle}")
        with self._sent_lock:
            self._sent[handle] = remote
        return remote

    def close(self) -> None:
        """End the session (the stdio server process exits) and the event-loop thread."""
        portal = self._portal
        if portal is None:
            return
        self._portal = None  # type: ignore[assignment]
        try:
            if self._stop is not None and not self._task.done():
                portal.call(self._stop.set)
            try:
                self._task.result(timeout=10)
            except (Exception, FutureTimeout):  # already failed, or slow to stop: cancel it
                self._task.cancel()
        finally:
            # A failed session's error was reported already; leaving the portal must not raise.
            with contextlib.suppress(Exception):
                self._portal_cm.__exit__(None, None, None)


def _runner(connection: MCPConnection, tool: str) -> Callable[..., Any]:
    def run(**arguments: Any) -> Any:
        return connection.run_tool(tool, arguments)

    run.__name__ = tool
    return run


def _cause(task: Future[None]) -> str:
    if not task.done():
        return "still running"
    if task.cancelled():
        return "stopped"
    exc = task.exception()
    while exc is not None and isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if exc is not None else "the session ended"


_CONNECTIONS: dict[tuple[str, str, str], MCPConnection] = {}
_LOCK = threading.Lock()


def _connection(name: str, settings: MCPServerSettings, config: Config) -> MCPConnection:
    key = (name, settings.model_dump_json(), str(config.home))
    with _LOCK:
        live = _CONNECTIONS.get(key)
        if live is not None and live.alive:
            return live
        if live is not None:
            live.close()
        _CONNECTIONS[key] = MCPConnection(name, settings, default_store(config))
        return _CONNECTIONS[key]


def mcp_tools(config: Config) -> list[BaseTool]:
    """The tools of every configured MCP server (none, and no import of ``mcp``, without any).

    Raises:
        ConfigError: a bad ``[mcp]`` section.
        MCPServerError: a server could not be started or reached, or lacks a listed tool.
        BackendUnavailableError: servers are configured but the ``mcp`` package is missing.
    """
    servers = mcp_servers(config)
    if not servers:
        return []
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        from mmagents.errors import BackendUnavailableError

        raise BackendUnavailableError(
            "[mcp.servers] is configured but the mcp package is not installed"
        ) from exc
    tools: list[BaseTool] = []
    for name, settings in servers.items():
        tools.extend(_connection(name, settings, config).tools())
    return tools


@atexit.register
def close_all() -> None:
    """Close every connection (stdio servers exit); also runs at interpreter exit."""
    with _LOCK:
        connections = list(_CONNECTIONS.values())
        _CONNECTIONS.clear()
    for connection in connections:
        connection.close()

"""An MCP server (``mmagents mcp``: stdio, or streamable HTTP with ``--http``) exposing the role tools to other agents.

Each role tool (caption, answer_question, score_image_text, read_text, crop_region,
generate_image, embed) is listed with its JSON input schema. Tools take image handles, so the
server adds one tool of its own, ``put_image``, that loads an image (a ``data:`` URL, an ``http(s)``
URL when ``[images] allow_remote = true``, or a file path under one of ``[images] allowed_roots``;
no file is read outside them, and the refusal does not say whether the file exists) into the image
store and returns its handle (a ``data:image/...;base64,`` URL is how a remote client sends
pixels). Results are JSON text plus ``structuredContent``, and every image a tool creates
(``generate_image``, ``crop_region``) also comes back as MCP image content (base64 PNG); a failing tool
answers ``isError: true`` with ``{"error": {"type", "message"}}`` so the calling agent can react
(the message never carries internal detail such as a model endpoint's URL). A line on stdin that is
not JSON-RPC is answered with a JSON-RPC parse error (code -32700, ``id: null``).
"""

from __future__ import annotations

import base64
import io
import json
import logging
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from mmagents.errors import MMAgentsError, client_message
from mmagents.images import ImageStore, default_store, is_handle
from mmagents.tools._base import MMTool

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

    from mmagents._config import Config

__all__ = ["PutImageTool", "build_server", "pipeline_tools", "run_stdio"]

_log = logging.getLogger(__name__)


class _PutImageInput(BaseModel):
    source: str = Field(
        description=(
            "data:image/...;base64 URL, http(s) URL (if the server allows remote images), or a "
            "file path under the server's [images] allowed_roots."
        ),
        min_length=1,
    )


class PutImageTool(MMTool):
    """Loads an image into the store; the returned handle is what the other tools take."""

    name: str = "put_image"
    description: str = (
        "Load an image (data URL, or a file under the allowed roots) and return its handle."
    )
    args_schema: type[BaseModel] = _PutImageInput

    def _run(self, source: str, **_: Any) -> dict[str, Any]:
        handle = self.store.put_from_client(source, files=True)
        width, height = self.store.get(handle).size
        return {"image": handle, "size": [width, height]}


def _schema(tool: BaseTool) -> dict[str, Any]:
    schema = tool.tool_call_schema
    if isinstance(schema, dict):
        return schema
    return schema.model_json_schema()  # type: ignore[union-attr]


def _invoke(tool: BaseTool, arguments: dict[str, Any]) -> tuple[Any, str | None]:
    """Run the tool; returns (result, error type or None). Any failure is reported, not raised."""
    from pydantic import ValidationError

    try:
        return tool.invoke(arguments), None
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return {"error": {"type": "ValidationError", "message": detail}}, "ValidationError"
    except Exception as exc:  # the calling agent gets the typed error instead of a dead server
        if not isinstance(exc, MMAgentsError):
            _log.exception("tool %s failed", tool.name)
        message = client_message(exc)
        return {"error": {"type": type(exc).__name__, "message": message}}, type(exc).__name__


def pipeline_tools(config: Config) -> list[BaseTool]:
    """The pipeline tools whose arguments are derived from a pipeline's input schema."""
    from mmagents.tools import PIPELINE_TOOLS, build_tools
    from mmagents.tools.pipelines import GraphTool

    return [t for t in build_tools(config, list(PIPELINE_TOOLS)) if isinstance(t, GraphTool)]


def _handles(value: Any) -> list[str]:
    """Every image handle inside a JSON-like value, in order, without repeats."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop(0)
        if isinstance(item, str) and is_handle(item) and item not in found:
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


def _image_content(types: Any, store: ImageStore, handle: str) -> Any:
    """The stored image of ``handle`` as MCP image content (base64 PNG)."""
    buffer = io.BytesIO()
    store.get(handle).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return types.ImageContent(type="image", data=data, mime_type="image/png")


def build_server(config: Config, tools: list[BaseTool] | None = None) -> Any:
    """The low-level MCP server over ``tools`` (default: the role tools, the pipelines on the
    contract as tools (their arguments are the pipelines' input schemas), and ``put_image``)."""
    import anyio
    import mcp_types as types
    from mcp.server.lowlevel import Server

    from mmagents import __version__
    from mmagents.tools import ROLE_TOOLS, build_tools

    chosen = (
        tools
        if tools is not None
        else [
            *build_tools(config, list(ROLE_TOOLS)),
            *pipeline_tools(config),
            PutImageTool(config=config),
        ]
    )
    by_name = {tool.name: tool for tool in chosen}
    store = default_store(config)

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=t.name, description=t.description, input_schema=_schema(t))
                for t in chosen
            ]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        tool = by_name.get(params.name)
        if tool is None:
            result: Any = {
                "error": {"type": "UnknownToolError", "message": f"no tool {params.name!r}"}
            }
            error: str | None = "UnknownToolError"
        else:
            # Backends are blocking (and may load weights): keep the event loop free.
            result, error = await anyio.to_thread.run_sync(
                _invoke, tool, dict(params.arguments or {})
            )
        structured = result if isinstance(result, dict) else {"result": result}
        content: list[Any] = [
            types.TextContent(type="text", text=json.dumps(structured, default=str))
        ]
        if error is None and params.name != "put_image":
            given = set(_handles(params.arguments or {}))
            for handle in _handles(structured):
                if handle not in given:  # a new image (generated, cropped): send its pixels too
                    content.append(_image_content(types, store, handle))
        return types.CallToolResult(
            content=content,
            structured_content=structured,
            is_error=error is not None,
        )

    return Server(
        "mmagents",
        version=__version__,
        instructions="Vision tools over image handles; call put_image first to get a handle.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def _answer_parse_errors(read_stream: Any, write_stream: Any, forward: Any) -> None:
    """Pass JSON-RPC messages from ``read_stream`` to ``forward``; answer the lines the SDK could
    not parse (it hands them over as exceptions and would otherwise stay silent) with a
    JSON-RPC parse error."""
    from mcp.shared.message import SessionMessage
    from mcp_types import PARSE_ERROR, ErrorData, JSONRPCError

    async with forward:
        async for item in read_stream:
            if isinstance(item, Exception):
                error = ErrorData(code=PARSE_ERROR, message="Parse error: not a JSON-RPC message")
                await write_stream.send(
                    SessionMessage(JSONRPCError(jsonrpc="2.0", id=None, error=error))
                )
            else:
                await forward.send(item)


def run_stdio(config: Config) -> int:
    """Serve MCP on stdin/stdout until the client closes the connection."""
    import anyio
    from mcp.server.stdio import stdio_server
    from mcp.shared._context_streams import create_context_streams
    from mcp.shared.message import SessionMessage

    server = build_server(config)

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            forward, incoming = create_context_streams[SessionMessage | Exception](0)
            async with anyio.create_task_group() as group:
                group.start_soon(_answer_parse_errors, read_stream, write_stream, forward)
                await server.run(incoming, write_stream, server.create_initialization_options())
                group.cancel_scope.cancel()

    anyio.run(main)
    return 0

"""``mmagents mcp --http``: the same MCP server over streamable HTTP at ``/mcp``.

Binds 127.0.0.1 by default. When ``MMAGENTS_API_KEY`` is set every request must carry
``Authorization: Bearer <key>`` (401 otherwise); binding any address other than loopback without a
key is refused, because the tools read images and run models for whoever can reach the port.
The SDK's DNS-rebinding protection (Host / Origin checks) stays on for loopback binds.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from mmagents.errors import ConfigError

if TYPE_CHECKING:
    from mmagents._config import Config

__all__ = ["build_http_app", "run_http"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _BearerKey:
    """ASGI middleware: HTTP requests need ``Authorization: Bearer <key>`` (scheme in any case)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.key
            ):
                body = json.dumps({"error": "missing or wrong bearer key"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def build_http_app(
    config: Config, *, host: str = "127.0.0.1", api_key: str | None = None
) -> ASGIApp:
    """The ASGI app serving :func:`mmagents.serve.mcp_server.build_server` at ``/mcp``.

    Args:
        config: The configuration the tools use.
        host: The address it will be bound to (loopback keeps DNS-rebinding protection on).
        api_key: Required bearer key (default ``$MMAGENTS_API_KEY``; empty means none).

    Raises:
        ConfigError: a non-loopback ``host`` without a key.
    """
    from mmagents.serve.mcp_server import build_server

    key = api_key if api_key is not None else os.environ.get("MMAGENTS_API_KEY", "")
    if not key and not _is_loopback(host):
        raise ConfigError(
            f"refusing to serve MCP on {host} without a key: set MMAGENTS_API_KEY "
            "(clients then send Authorization: Bearer <key>) or bind 127.0.0.1"
        )
    app: ASGIApp = build_server(config).streamable_http_app(streamable_http_path="/mcp", host=host)
    return _BearerKey(app, key) if key else app


def run_http(config: Config, *, host: str = "127.0.0.1", port: int = 8765) -> int:
    """Serve MCP over streamable HTTP until interrupted."""
    import uvicorn

    app = build_http_app(config, host=host)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0

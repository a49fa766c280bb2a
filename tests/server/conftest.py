"""Shared fixtures: a real Tornado HTTP server on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web

ServeFn = Callable[[list[Any]], str]


@pytest.fixture
async def serve_tornado() -> AsyncIterator[ServeFn]:
    """Start ``tornado.web.Application(handlers)`` on 127.0.0.1:<free port>; return its base URL."""
    servers: list[tornado.httpserver.HTTPServer] = []

    def serve(handlers: list[Any]) -> str:
        app = tornado.web.Application(handlers)
        server = tornado.httpserver.HTTPServer(app)
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        servers.append(server)
        return f"http://127.0.0.1:{sockets[0].getsockname()[1]}"

    yield serve
    for server in servers:
        server.stop()
        await server.close_all_connections()

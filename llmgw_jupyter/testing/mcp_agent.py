"""An external agent's view of the gateway: the official MCP client over streamable HTTP.

Shared by the tests and benchmarks so every one of them speaks to the endpoint exactly as an
agent with a bearer token does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client


@asynccontextmanager
async def agent_session(
    url: str, token: str, timeout: float = 60.0
) -> AsyncIterator[ClientSession]:
    """An initialized MCP session sending ``Authorization: Bearer <token>``."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session

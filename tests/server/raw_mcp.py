"""A raw MCP client's pieces for tests that look at the HTTP exchange itself (status codes,
headers, bodies) rather than through an SDK: the handshake-era initialize, bearer headers and
an opened session. Shared by the server tests; the SDK-level agent is
``llmgw_jupyter.testing.mcp_agent``."""

from __future__ import annotations

from typing import Any

import httpx

VERSION = "2025-06-18"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": VERSION,
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
ALLOW_ALL: dict[str, Any] = {"version": "1", "default": "allow"}


def bearer(token: str) -> dict[str, str]:
    """Headers of a raw MCP request sent with ``token``."""
    return {"Authorization": f"Bearer {token}", **ACCEPT}


def in_session(token: str, session: str) -> dict[str, str]:
    """Headers of a request inside an opened session."""
    return {**bearer(token), "mcp-session-id": session, "mcp-protocol-version": VERSION}


async def open_session(http: httpx.AsyncClient, url: str, token: str) -> str:
    """A handshake-era MCP session (initialize + initialized) of ``token``; its id."""
    opened = await http.post(url, headers=bearer(token), json=INITIALIZE)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    done = await http.post(
        url,
        headers=in_session(token, session),
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
    )
    assert done.status_code == 202, done.text
    return session

"""The MCP endpoint over real HTTP: Tornado, the bridge and the SDK, with the official client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from llmgw_jupyter.errors import ErrorCategory, GatewayError
from llmgw_jupyter.server.asgi_bridge import ASGIHandler
from llmgw_jupyter.server.mcp_endpoint import (
    CALLER_SCOPE_KEY,
    LOCAL_HOSTS,
    LOCAL_ORIGINS,
    MCPEndpoint,
    ProgressFn,
    build_mcp_app,
)
from llmgw_jupyter.testing.mcp_agent import agent_session

ServeFn = Callable[[list[Any]], str]
WAIT = 10.0
TOKENS = {"tok-owner": "owner", "tok-alice": "grant:alice"}
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}

OBJECT_IN = {
    "type": "object",
    "properties": {"text": {"type": "string", "description": "what to echo"}},
    "required": ["text"],
    "additionalProperties": False,
}
OBJECT_OUT = {
    "type": "object",
    "properties": {"echo": {"type": "string"}, "caller": {"type": "string"}},
    "required": ["echo", "caller"],
}
READ_ONLY = {
    "readOnlyHint": True,
    "destructiveHint": False,
    "idempotentHint": True,
    "openWorldHint": False,
}


@dataclass(frozen=True)
class Spec:
    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    annotations: dict[str, Any]


@dataclass(frozen=True)
class Result:
    is_error: bool
    text: str
    structured: dict[str, Any] | None


@dataclass
class FakeGateway:
    """Stands in for llmgw_jupyter.gateway.Gateway: a test of the adapter, not of policy."""

    calls: list[tuple[str, dict[str, Any], Any, bool]] = field(default_factory=list)
    first_progress_seen: asyncio.Event = field(default_factory=asyncio.Event)
    blocked: asyncio.Event = field(default_factory=asyncio.Event)
    block_cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    def list_tools(self, caller: Any) -> list[Spec]:
        specs = [
            Spec("echo", "Echo text back.", OBJECT_IN, OBJECT_OUT, READ_ONLY),
            Spec("watch", "Report progress.", {"type": "object"}, None, {"readOnlyHint": True}),
            Spec("deny", "Always denied.", {"type": "object"}, None, {}),
            Spec("broken", "Raises a GatewayError.", {"type": "object"}, None, {}),
            Spec("block", "Never returns.", {"type": "object"}, None, {}),
        ]
        if caller == "owner":
            specs.append(
                Spec(
                    "admin_only",
                    "Owner only.",
                    {"type": "object"},
                    None,
                    {"readOnlyHint": False, "destructiveHint": True},
                )
            )
        return specs

    async def call(
        self,
        tool_name: str,
        arguments: dict[str, Any],
        caller: Any,
        progress: ProgressFn | None = None,
    ) -> Result:
        self.calls.append((tool_name, arguments, caller, progress is not None))
        if tool_name not in {spec.name for spec in self.list_tools(caller)}:
            # Like the real gateway: unknown and hidden tools are refused here, not by the adapter.
            error = {"category": "policy_denied", "message": f"{tool_name} is not available"}
            return Result(True, f"[POLICY DENIED] {tool_name} is not available", {"error": error})
        if tool_name == "echo":
            return Result(False, arguments["text"], {"echo": arguments["text"], "caller": caller})
        if tool_name == "watch":
            assert progress is not None
            await progress(1, 3, "started")
            # Only the client receiving the first notification can let the call go on: proves
            # the notification streamed out while the call was still running.
            await asyncio.wait_for(self.first_progress_seen.wait(), WAIT)
            await progress(2, 3, "working")
            await progress(3, 3, None)
            return Result(False, "watched", {"done": True})
        if tool_name == "deny":
            error = {"category": "policy_denied", "message": "not allowed for you"}
            return Result(True, "denied: not allowed for you", {"error": error})
        if tool_name == "broken":
            raise GatewayError(ErrorCategory.INVALID_INPUT, "text: required", field="text")
        if tool_name == "block":
            self.blocked.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.block_cancelled.set()
                raise
        return Result(False, "admin done", None)


class MCPHandler(ASGIHandler):
    """Authenticates like the real extension will: a bearer token names the caller."""

    def prepare(self) -> None:
        header = self.request.headers.get("Authorization", "")
        self.caller = TOKENS.get(header.removeprefix("Bearer "))

    def asgi_scope_extras(self) -> dict[str, Any]:
        return {CALLER_SCOPE_KEY: self.caller} if self.caller else {}


@dataclass
class Served:
    url: str
    endpoint: MCPEndpoint
    gateway: FakeGateway


@pytest.fixture
async def served(serve_tornado: ServeFn) -> AsyncIterator[Served]:
    gateway = FakeGateway()
    endpoint = build_mcp_app(
        gateway, allowed_hosts=LOCAL_HOSTS, allowed_origins=LOCAL_ORIGINS, version="test"
    )
    base = serve_tornado([(r"/llmgw/mcp", MCPHandler, {"app": endpoint.asgi_app})])
    await endpoint.start()
    yield Served(f"{base}/llmgw/mcp", endpoint, gateway)
    await endpoint.stop()


def mcp_session(url: str, token: str) -> Any:
    """The official client, handshake era (what Codex CLI speaks)."""
    return agent_session(url, token, WAIT)


def sse_json(resp: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message in a one-event SSE (or plain JSON) answer."""
    if resp.headers["content-type"].startswith("application/json"):
        return dict(resp.json())
    data = [line[5:].strip() for line in resp.text.splitlines() if line.startswith("data:")]
    return dict(json.loads(data[-1]))


async def test_initialize_list_and_call(served: Served) -> None:
    async with mcp_session(served.url, "tok-owner") as session:
        assert session.initialize_result is not None
        assert session.initialize_result.server_info.name == "llmgw"
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == {"echo", "watch", "deny", "broken", "block", "admin_only"}
        echo = tools["echo"]
        assert echo.description == "Echo text back."
        assert echo.input_schema == OBJECT_IN
        assert echo.output_schema == OBJECT_OUT
        assert echo.annotations is not None
        assert echo.annotations.read_only_hint is True
        assert echo.annotations.destructive_hint is False
        assert echo.annotations.idempotent_hint is True
        assert echo.annotations.open_world_hint is False
        assert tools["deny"].annotations is None

        result = await session.call_tool("echo", {"text": "hi"})
        assert result.is_error is False
        assert result.structured_content == {"echo": "hi", "caller": "owner"}
        assert isinstance(result.content[0], types.TextContent)
        assert result.content[0].text == "hi"
    assert served.gateway.calls == [("echo", {"text": "hi"}, "owner", False)]


async def test_error_results(served: Served) -> None:
    """Errors are text every client reads (no structuredContent to break an output schema);
    the error object rides in ``_meta``."""
    async with mcp_session(served.url, "tok-alice") as session:
        denied = await session.call_tool("deny", {})
        assert denied.is_error is True
        assert isinstance(denied.content[0], types.TextContent)
        assert denied.content[0].text == "denied: not allowed for you; category: policy_denied"
        assert denied.structured_content is None
        assert denied.meta == {
            "llmgw/error": {"category": "policy_denied", "message": "not allowed for you"}
        }

        broken = await session.call_tool("broken", {})
        assert broken.is_error is True
        assert broken.structured_content is None
        assert isinstance(broken.content[0], types.TextContent)
        assert broken.content[0].text == "invalid_input: text: required; field: text"
        error = {"category": "invalid_input", "message": "text: required", "field": "text"}
        assert broken.meta == {"llmgw/error": error}

        unknown = await session.call_tool("no_such_tool", {})
        assert unknown.is_error is True
        assert isinstance(unknown.content[0], types.TextContent)
        assert "no_such_tool" in unknown.content[0].text


async def test_progress_notifications_stream_to_the_client(served: Served) -> None:
    seen: list[tuple[float, float | None, str | None]] = []
    all_seen = asyncio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))
        served.gateway.first_progress_seen.set()
        if len(seen) == 3:
            all_seen.set()

    async with mcp_session(served.url, "tok-owner") as session:
        result = await session.call_tool("watch", {}, progress_callback=on_progress)
        assert result.is_error is False
        assert result.structured_content == {"done": True}
        await asyncio.wait_for(all_seen.wait(), WAIT)
        # Without a progress token the gateway gets no progress callback.
        await session.call_tool("echo", {"text": "x"})
    assert seen == [(1, 3, "started"), (2, 3, "working"), (3, 3, None)]
    assert [(name, wired) for name, _, _, wired in served.gateway.calls] == [
        ("watch", True),
        ("echo", False),
    ]


async def test_each_caller_sees_its_own_tools(served: Served) -> None:
    async with (
        mcp_session(served.url, "tok-owner") as owner,
        mcp_session(served.url, "tok-alice") as alice,
    ):
        owner_tools = {tool.name for tool in (await owner.list_tools()).tools}
        alice_tools = {tool.name for tool in (await alice.list_tools()).tools}
        assert "admin_only" in owner_tools
        assert alice_tools == owner_tools - {"admin_only"}

        hidden = await alice.call_tool("admin_only", {})
        assert hidden.is_error is True
        assert isinstance(hidden.content[0], types.TextContent)
        assert "admin_only" in hidden.content[0].text
        assert (await owner.call_tool("admin_only", {})).is_error is False
        result = await alice.call_tool("echo", {"text": "a"})
        assert result.structured_content == {"echo": "a", "caller": "grant:alice"}
    # The hidden tool's call reached the gateway (which refused and can audit it).
    assert [(name, caller) for name, _, caller, _ in served.gateway.calls] == [
        ("admin_only", "grant:alice"),
        ("admin_only", "owner"),
        ("echo", "grant:alice"),
    ]


async def test_modern_protocol_client_reaches_the_same_tools(served: Served) -> None:
    """mcp.client.Client defaults to the 2026-07-28 per-request path (no session)."""
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)
        served.gateway.first_progress_seen.set()

    headers = {"Authorization": "Bearer tok-alice"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=WAIT) as http,
        Client(streamable_http_client(served.url, http_client=http)) as client,
    ):
        assert client.session.discover_result is not None
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "echo" in names and "admin_only" not in names
        echo = await client.call_tool("echo", {"text": "m"})
        assert echo.structured_content == {"echo": "m", "caller": "grant:alice"}
        watched = await client.call_tool("watch", {}, progress_callback=on_progress)
        assert watched.structured_content == {"done": True}
    assert seen == [1, 2, 3]


async def initialize_raw(http: httpx.AsyncClient, url: str, token: str) -> str:
    resp = await http.post(
        url,
        headers={"Authorization": f"Bearer {token}", **MCP_ACCEPT},
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        },
    )
    assert resp.status_code == 200, resp.text
    return resp.headers["mcp-session-id"]


async def test_a_session_is_bound_to_its_caller(served: Served) -> None:
    list_tools = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    async with httpx.AsyncClient(timeout=WAIT) as http:
        session_id = await initialize_raw(http, served.url, "tok-alice")
        common = {"mcp-session-id": session_id, "mcp-protocol-version": "2025-06-18", **MCP_ACCEPT}
        stolen = await http.post(
            served.url, headers={"Authorization": "Bearer tok-owner", **common}, json=list_tools
        )
        assert stolen.status_code == 404
        assert "tools" not in stolen.text
        own = await http.post(
            served.url, headers={"Authorization": "Bearer tok-alice", **common}, json=list_tools
        )
        assert own.status_code == 200
        names = {tool["name"] for tool in sse_json(own)["result"]["tools"]}
        assert "admin_only" not in names


async def test_missing_or_bad_credentials_get_401(served: Served) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            resp = await http.post(
                served.url,
                headers={**headers, **MCP_ACCEPT},
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            )
            assert resp.status_code == 401
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert "echo" not in resp.text


async def test_dns_rebinding_checks(served: Served) -> None:
    port = served.url.split(":")[2].split("/")[0]
    auth = {"Authorization": "Bearer tok-owner"}
    async with httpx.AsyncClient(timeout=WAIT) as http:
        bad_origin = await http.post(
            served.url,
            headers={**auth, **MCP_ACCEPT, "Origin": "http://evil.example"},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        )
        assert bad_origin.status_code == 403
        bad_host = await http.get(served.url, headers={**auth, "Host": f"evil.example:{port}"})
        assert bad_host.status_code == 421
        # A local page's origin is allowed.
        ok = await http.post(
            served.url,
            headers={**auth, **MCP_ACCEPT, "Origin": f"http://localhost:{port}"},
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"},
                },
            },
        )
        assert ok.status_code == 200


async def test_stop_ends_the_session_manager_cleanly(served: Served) -> None:
    async with mcp_session(served.url, "tok-owner") as session:
        call = asyncio.create_task(session.call_tool("block", {}))
        await asyncio.wait_for(served.gateway.blocked.wait(), WAIT)
        task = served.endpoint._task
        assert task is not None and served.endpoint.running

        await asyncio.wait_for(served.endpoint.stop(), WAIT)

        assert task.done() and not served.endpoint.running
        assert task.cancelled() or task.exception() is None
        await asyncio.wait_for(served.gateway.block_cancelled.wait(), WAIT)
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
    async with httpx.AsyncClient(timeout=WAIT) as http:
        resp = await http.post(
            served.url,
            headers={"Authorization": "Bearer tok-owner", **MCP_ACCEPT},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        )
        assert resp.status_code == 503

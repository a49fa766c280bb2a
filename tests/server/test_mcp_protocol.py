"""The MCP endpoint's protocol details, raw JSON-RPC over real HTTP to a pytest-jupyter server.

What each test pins (issue 10): unknown tools and bad cursors are ``-32602``; a cancelled request
gets no response on either path; event streams are primed at once; ``Last-Event-ID`` is a clean
405; 2025-03-26 (batches) is not agreed to; ``tools.listChanged`` is declared; the 2026-07-28
revision works statelessly; and the SDK facts the endpoint relies on are public and present.

The owner's policy makes ``llm_job_list`` wait for an approval: a call that stays quiet for as
long as the test wants, on the quick path (no progress token) or the SDK's (with one).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from jupyter_fixtures import *  # noqa: F403 - pytest-jupyter fixtures, see the module
from jupyter_fixtures import Served
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import Server
from mcp.server.session import ServerSession
from mcp.server.streamable_http import REQUEST_CANCELLED
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from mcp_types.methods import serialize_server_result
from mcp_types.version import LATEST_HANDSHAKE_VERSION
from traitlets.config import Config

import llmgw_jupyter.server as server_package

WAIT = 30.0
ACCEPT = {"Accept": "application/json, text/event-stream"}
APPROVAL_POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {"llm_job_list": {"action": "require_approval", "approval": {"timeout": 60}}},
}


@pytest.fixture
def jp_server_config(llmgw_config: dict[str, Any], tmp_path: Path) -> Config:
    """``jupyter_fixtures``' server config with the owner policy above."""
    policy = tmp_path / "owner-policy.json"
    policy.write_text(json.dumps(APPROVAL_POLICY))
    return Config(
        {
            "ServerApp": {
                "jpserver_extensions": {"llmgw_jupyter": True},
                "allow_unauthenticated_access": False,
            },
            "LLMGatewayApp": {**llmgw_config, "owner_policy": str(policy)},
        }
    )


class Raw:
    """A raw MCP client: one session, JSON-RPC posts."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: str) -> None:
        self.http, self.url = http, url
        self.headers = {"Authorization": f"Bearer {token}", **ACCEPT}
        self.session = ""
        self.initialized: dict[str, Any] = {}

    async def open(self, version: str = "2025-11-25") -> Raw:
        resp = await self.post(request("initialize", _initialize(version), 0))
        assert resp.status_code == 200, resp.text
        self.initialized = events(resp.text)[-1]["result"]
        self.session = resp.headers["mcp-session-id"]
        negotiated = self.initialized["protocolVersion"]
        self.headers.update({"mcp-session-id": self.session, "mcp-protocol-version": negotiated})
        done = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert done.status_code == 202
        return self

    async def post(self, message: Any, **headers: str) -> httpx.Response:
        return await self.http.post(self.url, json=message, headers={**self.headers, **headers})

    def stream(self, message: Any, **headers: str) -> Any:
        return self.http.stream("POST", self.url, json=message, headers={**self.headers, **headers})

    async def cancel(self, request_id: Any) -> None:
        params = {"requestId": request_id, "reason": "the test cancels"}
        sent = await self.post(
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}
        )
        assert sent.status_code == 202


def request(method: str, params: dict[str, Any] | None, request_id: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def _initialize(version: str) -> dict[str, Any]:
    return {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    }


def events(text: str) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an SSE body (or of a JSON body)."""
    if text.lstrip().startswith("{"):
        return [json.loads(text)]
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:{")] + [
        json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")
    ]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        yield client


@pytest.fixture
async def owner(llmgw: Served, http: httpx.AsyncClient) -> Raw:
    return await Raw(http, llmgw.url("llmgw/mcp"), llmgw.token).open()


async def pending_approvals(llmgw: Served, count: int) -> list[Any]:
    """Wait (bounded) until ``count`` approvals are pending: the call is now waiting quietly."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        pending = llmgw.service.gateway.approvals()
        if len(pending) >= count:
            return pending
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} approval(s) never became pending")


def job_list(request_id: Any, progress: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "llm_job_list", "arguments": {}}
    if progress:
        params["_meta"] = {"progressToken": f"p-{request_id}"}
    return request("tools/call", params, request_id)


# -- protocol errors ----------------------------------------------------------------------------
async def test_an_unknown_tool_is_invalid_params_and_still_audited(
    owner: Raw, llmgw: Served
) -> None:
    resp = await owner.post(request("tools/call", {"name": "llm_nope", "arguments": {}}, 7))
    answer = events(resp.text)[-1]
    assert "result" not in answer
    assert answer["id"] == 7 and answer["error"]["code"] == types.INVALID_PARAMS
    assert "llm_nope" in answer["error"]["message"]
    assert answer["error"]["data"] == {"category": "not_found", "field": "tool"}
    audit = llmgw.service.gateway.store.query_audit(caller="owner")
    assert any(record.decision == "unknown_tool" for record in audit)


async def test_a_cursor_the_server_never_gave_is_invalid_params(owner: Raw) -> None:
    listed = events((await owner.post(request("tools/list", {}, 1))).text)[-1]
    assert "nextCursor" not in listed["result"]  # one page
    resp = await owner.post(request("tools/list", {"cursor": "page-2"}, 2))
    answer = events(resp.text)[-1]
    assert answer["error"]["code"] == types.INVALID_PARAMS
    assert answer["error"]["message"].startswith('cursor: "page-2"')


# -- cancellation -------------------------------------------------------------------------------
async def test_a_cancelled_streaming_call_gets_no_response(owner: Raw, llmgw: Served) -> None:
    async with owner.stream(job_list("slow-1", progress=True)) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        [approval] = await pending_approvals(llmgw, 1)
        await owner.cancel("slow-1")
        body = (await asyncio.wait_for(resp.aread(), WAIT)).decode()  # the stream ends
    assert str(REQUEST_CANCELLED) not in body
    assert all(message.get("id") != "slow-1" for message in events(body)), body
    assert llmgw.service.gateway.approvals() == []  # the waiting call was stopped
    assert approval.id not in {a.id for a in llmgw.service.gateway.approvals()}
    # The session goes on.
    listed = events((await owner.post(request("tools/list", None, 3))).text)[-1]
    assert listed["result"]["tools"]


async def test_a_quick_call_whose_client_went_away_is_stopped(owner: Raw, llmgw: Served) -> None:
    """As on the ASGI path: the waiting call ends ``disconnect_grace`` (5 s) after the client
    closed its connection, instead of holding its approval until the timeout (60 s)."""
    async with httpx.AsyncClient(timeout=WAIT) as gone:
        call = asyncio.create_task(
            gone.post(owner.url, json=job_list("left-1", progress=False), headers=owner.headers)
        )
        await pending_approvals(llmgw, 1)
        call.cancel()  # the client gives up: its connection closes
        with contextlib.suppress(asyncio.CancelledError):
            await call
    deadline = time.monotonic() + WAIT
    while llmgw.service.gateway.approvals() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert llmgw.service.gateway.approvals() == []
    listed = events((await owner.post(request("tools/list", None, 4))).text)[-1]
    assert listed["result"]["tools"]  # the session goes on


async def test_a_cancelled_quick_call_gets_no_response(owner: Raw, llmgw: Served) -> None:
    call = asyncio.create_task(owner.post(job_list("quick-1", progress=False)))
    await pending_approvals(llmgw, 1)
    await owner.cancel("quick-1")
    resp = await asyncio.wait_for(call, WAIT)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.text == ""  # no event, no response: nothing is ever sent for a cancelled call
    assert llmgw.service.gateway.approvals() == []
    # A cancellation for another session's call (or an unknown id) changes nothing.
    await owner.cancel("quick-1")


# -- event streams ------------------------------------------------------------------------------
async def test_an_event_stream_is_primed_before_anything_happens(owner: Raw, llmgw: Served) -> None:
    async with owner.stream(job_list("primed-1", progress=True)) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        chunks = resp.aiter_raw()
        first = await asyncio.wait_for(anext(chunks), WAIT)
        # The call is still waiting for its approval: nothing but the priming event is out.
        assert llmgw.service.gateway.approvals()
        event_id, data = first.decode().split("\n")[:2]
        assert event_id.startswith("id: ") and len(event_id) > 4
        assert data == "data: "
        [approval] = await pending_approvals(llmgw, 1)
        await llmgw.service.gateway.decide_approval(approval.id, True)
        rest = b"".join([chunk async for chunk in chunks]).decode()
    assert events(rest)[-1]["result"]["isError"] is False


async def test_older_clients_get_a_comment_not_an_empty_event(
    llmgw: Served, http: httpx.AsyncClient
) -> None:
    """Clients before 2025-11-25 may not parse an empty-data event: a comment flushes as well."""
    older = await Raw(http, llmgw.url("llmgw/mcp"), llmgw.token).open("2025-06-18")
    assert older.initialized["protocolVersion"] == "2025-06-18"
    async with older.stream(job_list("old-1", progress=True)) as resp:
        first = await asyncio.wait_for(anext(resp.aiter_raw()), WAIT)
        assert first == b": stream open\n\n"
        await older.cancel("old-1")


async def test_the_get_stream_is_primed_and_last_event_id_is_a_clean_405(
    owner: Raw, http: httpx.AsyncClient
) -> None:
    headers = {**owner.headers, "Accept": "text/event-stream"}
    async with http.stream("GET", owner.url, headers=headers) as resp:
        assert resp.status_code == 200
        first = await asyncio.wait_for(anext(resp.aiter_raw()), WAIT)
        assert first.startswith(b"id: ") and first.endswith(b"\ndata: \n\n")
        last_id = first.split(b"\n")[0][4:].decode()
    resumed = await http.get(owner.url, headers={**headers, "Last-Event-ID": last_id})
    assert resumed.status_code == 405
    assert "GET" in resumed.headers["allow"]
    error = resumed.json()["error"]
    assert error["code"] == types.INVALID_REQUEST and "Last-Event-ID" in error["message"]


# -- versions and capabilities ------------------------------------------------------------------
async def test_2025_03_26_is_not_agreed_to_so_batches_are_never_owed(
    llmgw: Served, http: httpx.AsyncClient, owner: Raw
) -> None:
    asked = await Raw(http, llmgw.url("llmgw/mcp"), llmgw.token).open("2025-03-26")
    assert asked.initialized["protocolVersion"] == LATEST_HANDSHAKE_VERSION
    # Every revision agreed to has no batches: one is refused as a bad request.
    batch = [request("tools/list", None, 1), request("tools/list", None, 2)]
    assert (await asked.post(batch)).status_code == 400


async def test_tool_list_changes_are_declared(owner: Raw) -> None:
    assert owner.initialized["capabilities"]["tools"] == {"listChanged": True}


async def test_the_2026_revision_serves_stateless_calls(llmgw: Served) -> None:
    """The official Python client's default: no initialize, no session, same tools."""
    headers = {"Authorization": f"Bearer {llmgw.token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=WAIT) as http2,
        Client(streamable_http_client(llmgw.url("llmgw/mcp"), http_client=http2)) as client,
    ):
        assert client.session.protocol_version == "2026-07-28"
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "llm_job_status" in names
        missing = await client.call_tool("llm_job_status", {"job_id": "nosuchjob"})
        assert missing.is_error is True and missing.structured_content is None
        assert missing.meta is not None and missing.meta["llmgw/error"]["category"] == "not_found"
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("llm_nope", {})
        assert unknown.value.code == types.INVALID_PARAMS


# -- what the endpoint relies on in the SDK -----------------------------------------------------
def test_the_sdk_facts_the_endpoint_relies_on() -> None:
    """Pinned to the SDK this was written against: a new SDK version must be looked at (the
    module docstring of ``mcp_endpoint`` lists these facts), not trusted to behave the same."""
    assert version("mcp").startswith("2.3."), version("mcp")
    manager = inspect.signature(StreamableHTTPSessionManager.__init__).parameters
    for name in ("json_response", "stateless", "session_idle_timeout", "max_sessions"):
        assert name in manager
    options = inspect.signature(Server.create_initialization_options).parameters
    assert list(options)[1:] == ["notification_options", "experimental_capabilities", "extensions"]
    assert callable(ServerSession.send_tool_list_changed)
    assert REQUEST_CANCELLED == -32800
    assert serialize_server_result("tools/call", "2025-11-25", {"content": []}) == {"content": []}


def test_no_private_sdk_names_are_used() -> None:
    """Only ``self._x`` of our own objects: no ``something._x`` reaches into the SDK."""
    folder = Path(inspect.getfile(server_package)).parent
    for module in ("mcp_endpoint", "mcp_quick", "mcp_sessions", "mcp_streams", "mcp_tool_lists"):
        tree = ast.parse((folder / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith("__") and node.attr.endswith("__"):
                continue
            owner = node.value
            assert isinstance(owner, ast.Name) and owner.id == "self", (
                f"{module}.py:{node.lineno} reads a private name {node.attr!r}"
            )

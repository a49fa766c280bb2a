"""The quick path: tool calls that stream nothing get one JSON answer; everything else is the SDK's.

Raw JSON-RPC over real HTTP to the extension in a pytest-jupyter server, so the wire form (content
type, ids, session headers) is what is checked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from jupyter_fixtures import *  # noqa: F403 - pytest-jupyter fixtures, see the module
from jupyter_fixtures import Served

WAIT = 30.0
ACCEPT = {"Accept": "application/json, text/event-stream"}
VERSION = {"mcp-protocol-version": "2025-06-18"}


class Agent:
    """A raw MCP client: one session, JSON-RPC posts, answers parsed from JSON or SSE."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: str) -> None:
        self.http, self.url = http, url
        self.headers = {"Authorization": f"Bearer {token}", **ACCEPT}
        self.session = ""

    async def open(self) -> Agent:
        resp = await self.post(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"},
                },
            }
        )
        assert resp.status_code == 200, resp.text
        self.session = resp.headers["mcp-session-id"]
        self.headers.update({"mcp-session-id": self.session, **VERSION})
        done = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert done.status_code == 202
        return self

    async def post(self, message: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.http.post(self.url, json=message, headers={**self.headers, **headers})

    async def call(self, tool: str, arguments: dict[str, Any], **extra: Any) -> httpx.Response:
        params = {"name": tool, "arguments": arguments, **extra}
        return await self.post(
            {"jsonrpc": "2.0", "id": "c-1", "method": "tools/call", "params": params}
        )


def answer(resp: httpx.Response) -> dict[str, Any]:
    if resp.headers["content-type"].startswith("application/json"):
        return dict(resp.json())
    data = [ln[5:] for ln in resp.text.splitlines() if ln.startswith("data:")]
    return dict(json.loads(data[-1]))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        yield client


@pytest.fixture
async def owner(llmgw: Served, http: httpx.AsyncClient) -> Agent:
    return await Agent(http, llmgw.url("llmgw/mcp"), llmgw.token).open()


async def test_a_call_that_streams_nothing_is_one_json_answer(owner: Agent) -> None:
    resp = await owner.call("llm_job_list", {})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["mcp-session-id"] == owner.session
    body = resp.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == "c-1"
    result = body["result"]
    assert result["isError"] is False
    assert result["structuredContent"] == {"jobs": [], "total": 0, "limit": 20, "offset": 0}
    assert result["content"][0]["type"] == "text"

    refused = await owner.call("llm_job_status", {"job_id": "nope"})
    assert refused.headers["content-type"] == "application/json"
    assert refused.json()["result"]["isError"] is True
    assert "structuredContent" not in refused.json()["result"]
    assert refused.json()["result"]["_meta"]["llmgw/error"]["category"] == "not_found"


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("llm_job_list", {}),
        ("llm_job_status", {"job_id": "nope"}),
        ("llm_job_list", {"limit": -1}),
    ],
)
async def test_a_quick_answer_is_what_the_sdk_answers(
    owner: Agent, tool: str, arguments: dict[str, Any]
) -> None:
    """The same call through the SDK (a progress token keeps it there) answers the same result:
    the quick path shapes results with the SDK's own per-version serializer."""
    quick = await owner.call(tool, arguments)
    assert quick.headers["content-type"] == "application/json"
    streamed = await owner.call(tool, arguments, _meta={"progressToken": "p"})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert quick.json() == answer(streamed)


async def test_progress_and_waiting_tools_keep_the_sdk_stream(owner: Agent) -> None:
    with_progress = await owner.call("llm_job_list", {}, _meta={"progressToken": "p1"})
    assert with_progress.headers["content-type"].startswith("text/event-stream")
    assert answer(with_progress)["result"]["structuredContent"]["total"] == 0
    job = answer(await owner.call("codex_request_async", {"prompt": "hi"}))["result"]
    watch = await owner.call(
        "llm_job_watch", {"job_id": job["structuredContent"]["job"]["id"], "timeout_seconds": 0}
    )
    assert watch.headers["content-type"].startswith("text/event-stream")
    assert answer(watch)["result"]["isError"] is False


async def test_foreign_unknown_and_closed_sessions_are_left_to_the_sdk(
    owner: Agent, llmgw: Served, http: httpx.AsyncClient
) -> None:
    gateway = llmgw.service.gateway
    _, token = gateway.create_grant("intruder", {"version": "1", "default": "allow"})
    intruder = Agent(http, owner.url, token)
    intruder.headers.update({"mcp-session-id": owner.session, **VERSION})
    stolen = await intruder.call("llm_job_list", {})
    assert stolen.status_code == 404
    assert gateway.store.query_audit(caller="grant:intruder") == []  # never reached the gateway

    lost = await owner.http.post(
        owner.url,
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "llm_job_list"},
        },
        headers={**owner.headers, "mcp-session-id": "0" * 32},
    )
    assert lost.status_code == 404
    missing = {k: v for k, v in owner.headers.items() if k != "mcp-session-id"}
    no_session = await owner.http.post(
        owner.url,
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "llm_job_list"},
        },
        headers=missing,
    )
    assert no_session.status_code == 400

    closed = await owner.http.delete(owner.url, headers=owner.headers)
    assert closed.status_code == 200
    after = await owner.call("llm_job_list", {})
    assert after.status_code == 404


async def test_a_session_used_only_by_quick_calls_stays_open(owner: Agent, llmgw: Served) -> None:
    """Quick calls never reach the SDK's transport, so the ledger owns the idle rule: a call in
    flight holds the session, and the session ends (in the SDK too) only once idle."""
    endpoint = llmgw.service.mcp
    assert endpoint is not None and endpoint.sessions is not None
    ledger = endpoint.sessions
    assert endpoint.session_manager.session_idle_timeout is None  # the SDK's expiry is off
    assert ledger.owner_of(owner.session) == "owner"
    resp = await owner.call("llm_job_list", {})
    assert resp.headers["content-type"] == "application/json"
    expiry = ledger.next_expiry()
    assert expiry is not None and ledger.idle_timeout is not None
    assert expiry >= ledger.clock() + ledger.idle_timeout - 1.0
    assert (await owner.call("llm_session_list", {})).status_code == 200

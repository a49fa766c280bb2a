"""The quick path served by Tornado itself (``mcp_handler.QuickMCPHandler``).

What must hold: the common calls (a quick tool without progress, ``ping``) are answered without
the ASGI app, everything else still reaches it, and every check of the full path still applies
on the quick one (token, Host/Origin, the session's caller, the session kept alive). Real
Jupyter server (pytest-jupyter, in process) over real loopback HTTP; the ASGI app is wrapped to
count what reaches it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from jupyter_fixtures import *  # noqa: F403 - pytest-jupyter fixtures, see the module
from jupyter_fixtures import Served, grant_token
from raw_mcp import bearer, in_session, open_session

from llmgw_jupyter.server.handlers import MCP_PATH
from llmgw_jupyter.server.mcp_handler import QuickMCPHandler

WAIT = 30.0


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        yield client


@pytest.fixture
def asgi_requests(llmgw: Served, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The JSON-RPC method (or HTTP method) of every request that reached the ASGI app."""
    seen: list[str] = []
    forward = llmgw.service.mcp_asgi

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        seen.append(str(scope.get("method")))
        await forward(scope, receive, send)

    monkeypatch.setattr(llmgw.service, "mcp_asgi", counting)
    return seen


def status_call(request_id: int | str = 2, **meta: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "llm_job_status", "arguments": {"job_id": "no-such-job"}}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def handler_classes(router: Any) -> list[Any]:
    """Every handler class under a Tornado router (rules nest routers)."""
    found: list[Any] = []
    for rule in getattr(router, "rules", ()):
        target = rule.target
        found += handler_classes(target) if hasattr(target, "rules") else [target]
    return found


def test_the_mcp_route_is_served_by_the_quick_handler(llmgw: Served, jp_serverapp: Any) -> None:
    assert QuickMCPHandler in handler_classes(jp_serverapp.web_app.default_router)


async def test_quick_calls_and_ping_skip_the_asgi_app_and_the_rest_reaches_it(
    llmgw: Served, http: httpx.AsyncClient, asgi_requests: list[str]
) -> None:
    url = llmgw.url(MCP_PATH)
    session = await open_session(http, url, llmgw.token)  # initialize + initialized: ASGI
    reached = len(asgi_requests)
    assert reached == 2

    headers = in_session(llmgw.token, session)
    answer = await http.post(url, headers=headers, json=status_call())
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["mcp-session-id"] == session
    body = answer.json()
    assert body["id"] == 2 and body["result"]["isError"] is True
    assert "not_found" in body["result"]["content"][0]["text"]

    pong = await http.post(
        url, headers=headers, json={"jsonrpc": "2.0", "id": "p", "method": "ping"}
    )
    assert pong.status_code == 200 and pong.json() == {"jsonrpc": "2.0", "id": "p", "result": {}}
    assert len(asgi_requests) == reached  # neither reached the ASGI app

    listed = await http.post(
        url, headers=headers, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"}
    )
    assert listed.status_code == 200, listed.text
    with_progress = await http.post(url, headers=headers, json=status_call(4, progressToken="t"))
    assert with_progress.status_code == 200, with_progress.text
    assert with_progress.headers["content-type"].startswith("text/event-stream")
    assert len(asgi_requests) == reached + 2  # tools/list and the call asking for progress


async def test_the_quick_path_keeps_the_full_paths_checks(
    llmgw: Served, http: httpx.AsyncClient, owner_api: httpx.AsyncClient, asgi_requests: list[str]
) -> None:
    url = llmgw.url(MCP_PATH)
    session = await open_session(http, url, llmgw.token)
    headers = in_session(llmgw.token, session)
    assert (await http.post(url, headers=headers, json=status_call())).status_code == 200

    # A Host/Origin pair that passed once does not open the door to another pair.
    evil_origin = {**headers, "Origin": "http://evil.example"}
    assert (await http.post(url, headers=evil_origin, json=status_call())).status_code == 403
    evil_host = {**headers, "Host": "evil.example"}
    assert (await http.post(url, headers=evil_host, json=status_call())).status_code == 421
    # No token, or a token of nobody: 401 as on the full path.
    nobody = {**headers, "Authorization": "Bearer llmgw_nobody"}
    assert (await http.post(url, headers=nobody, json=status_call())).status_code == 401
    # Another caller's session is not served to this one (the SDK's 404 for unknown sessions).
    token = await grant_token(owner_api, "other")
    foreign = in_session(token, session)
    refused = await http.post(url, headers=foreign, json=status_call())
    assert refused.status_code == 404, refused.text
    # An unknown session is the SDK's to answer too.
    unknown = await http.post(url, headers=in_session(llmgw.token, "0" * 32), json=status_call())
    assert unknown.status_code == 404, unknown.text
    # The session itself still works on the quick path after all that.
    assert (await http.post(url, headers=headers, json=status_call())).status_code == 200


async def test_a_grants_quick_call_answers_as_the_sdk_path_does(
    llmgw: Served, http: httpx.AsyncClient, owner_api: httpx.AsyncClient
) -> None:
    """The same call, quick (no progress) and through the SDK (with a progress token): one
    result, so the quick path's own encoding is the SDK's wire form."""
    url = llmgw.url(MCP_PATH)
    token = await grant_token(owner_api, "twin")
    session = await open_session(http, url, token)
    headers = in_session(token, session)
    quick = (await http.post(url, headers=headers, json=status_call(7))).json()
    streamed = await http.post(url, headers=headers, json=status_call(7, progressToken="p"))
    data = [
        ln[5:] for ln in streamed.text.splitlines() if ln.startswith("data:") and ln[5:].strip()
    ]
    assert quick == json.loads(data[-1])


async def test_requests_without_a_session_are_not_quick(
    llmgw: Served, http: httpx.AsyncClient, asgi_requests: list[str]
) -> None:
    url = llmgw.url(MCP_PATH)
    answer = await http.post(url, headers=bearer(llmgw.token), json=status_call())
    assert answer.status_code in (400, 404), answer.text  # the SDK's answer, not a quick one
    assert asgi_requests == ["POST"]

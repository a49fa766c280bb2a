"""The MCP endpoint's lean handler: bearer tokens only, cached callers that never outlive a grant.

``MCPHandler`` is a plain Tornado handler (not Jupyter's ``APIHandler``) and keeps grant callers
in a cache by token hash. These tests pin what must not change with that: the owner's and a
grant's tokens work, a revoked grant's token is refused on its very next request (revoked over
REST, in this process without waiting for the enforcement, or by another process on the same
store), a Jupyter browser login (cookie, XSRF token, ``?token=``) never authenticates MCP,
Host/Origin rebinding is refused, bodies stay capped, and an agent's requests count as
activity. Real Jupyter servers (pytest-jupyter, in process) over real loopback HTTP.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from jupyter_fixtures import *  # noqa: F403 - pytest-jupyter fixtures, see the module
from jupyter_fixtures import Served, grant_token
from jupyter_server.base.handlers import JupyterHandler
from raw_mcp import ACCEPT, ALLOW_ALL, INITIALIZE, bearer, in_session, open_session

from llmgw_jupyter.grants import create_grant, revoke_grant
from llmgw_jupyter.server.auth import TokenCache
from llmgw_jupyter.server.handlers import ACTIVITY_KEY, MCP_PATH, MCPHandler
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.policy import PolicyStore

WAIT = 30.0


async def list_tools(http: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    """A stateless-era request that needs a caller: ``initialize`` (opens a session)."""
    return await http.post(url, headers=bearer(token), json=INITIALIZE)


async def call_status(
    http: httpx.AsyncClient, url: str, token: str, session: str, job_id: str
) -> httpx.Response:
    headers = in_session(token, session)
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "llm_job_status", "arguments": {"job_id": job_id}},
    }
    return await http.post(url, headers=headers, json=call)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        yield client


def unknown_job_answer(resp: httpx.Response) -> dict[str, Any]:
    """The tool's answer to a status call for a job nobody has: served, and an error result."""
    assert resp.status_code == 200, resp.text
    result = dict(resp.json()["result"])
    assert result["isError"] is True, result
    return result


# -- what the handler is ----------------------------------------------------------------------
def test_the_mcp_handler_is_not_a_jupyter_handler() -> None:
    """None of Jupyter's per-request machinery (identity provider, login cookie) runs for MCP."""
    assert not issubclass(MCPHandler, JupyterHandler)


# -- tokens that work -------------------------------------------------------------------------
async def test_the_owner_token_and_a_grant_token_are_served(
    llmgw: Served, owner_api: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    url = llmgw.url(MCP_PATH)
    token = await grant_token(owner_api, "worker")
    for credential in (llmgw.token, token, token):  # the grant twice: from the store, then cached
        session = await open_session(http, url, credential)
        unknown_job_answer(await call_status(http, url, credential, session, "no-such-job"))
    assert (await list_tools(http, url, "llmgw_not-a-real-grant-token")).status_code == 401
    assert (await http.post(url, headers={**ACCEPT, "Authorization": "Bearer"})).status_code == 401


# -- revocation -------------------------------------------------------------------------------
async def test_a_token_revoked_over_rest_is_refused_on_its_next_request(
    llmgw: Served, owner_api: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    url = llmgw.url(MCP_PATH)
    token = await grant_token(owner_api, "leaving")
    session = await open_session(http, url, token)
    unknown_job_answer(await call_status(http, url, token, session, "x"))  # cached now

    assert (await owner_api.delete("grants/leaving")).status_code == 200
    refused = await list_tools(http, url, token)
    assert refused.status_code == 401, refused.text
    on_session = await call_status(http, url, token, session, "x")
    assert on_session.status_code == 401, on_session.text


async def test_a_token_is_refused_as_soon_as_the_revocation_is_made_in_this_process(
    llmgw: Served, owner_api: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    """No waiting for the enforcement (jobs, sessions, listeners): the next request is refused."""
    url = llmgw.url(MCP_PATH)
    token = await grant_token(owner_api, "sudden")
    session = await open_session(http, url, token)
    unknown_job_answer(await call_status(http, url, token, session, "x"))

    assert llmgw.service.mcp_caller(f"Bearer {token}") is not None
    enforcing = llmgw.service.revoke_grant("sudden")
    try:
        # Nothing has awaited yet: the enforcement task (and its listeners) has not run.
        assert llmgw.service.mcp_caller(f"Bearer {token}") is None
        assert (await call_status(http, url, token, session, "x")).status_code == 401
    finally:
        if enforcing is not None:
            await enforcing


async def test_a_token_revoked_by_another_process_is_refused_on_its_next_request(
    llmgw: Served, owner_api: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    """The CLI (``llmgw grants revoke``) writes to the same store through its own connection."""
    url = llmgw.url(MCP_PATH)
    token = await grant_token(owner_api, "elsewhere")
    session = await open_session(http, url, token)
    unknown_job_answer(await call_status(http, url, token, session, "x"))

    other = Database(llmgw.service.runtime.data_dir / "llmgw.sqlite3")
    try:
        revoke_grant(PolicyStore(other), "elsewhere")
    finally:
        other.close()
    assert (await call_status(http, url, token, session, "x")).status_code == 401
    assert (await list_tools(http, url, token)).status_code == 401


async def test_a_grant_created_by_another_process_works_at_once(
    llmgw: Served, http: httpx.AsyncClient
) -> None:
    other = Database(llmgw.service.runtime.data_dir / "llmgw.sqlite3")
    try:
        _, token = create_grant(PolicyStore(other), "from-cli", ALLOW_ALL)
    finally:
        other.close()
    assert (await list_tools(http, llmgw.url(MCP_PATH), token)).status_code == 200


# -- a browser's Jupyter login is no MCP credential --------------------------------------------
async def test_a_jupyter_login_cookie_or_url_token_never_authenticates_mcp(
    llmgw: Served, http: httpx.AsyncClient
) -> None:
    # A real browser login: Jupyter sets its login cookie when a token authenticates.
    status = await http.get(llmgw.url("api/status"), headers=llmgw.auth)
    assert status.status_code == 200
    login = [name for name in http.cookies if name.startswith("username-")]
    assert login, dict(http.cookies)
    # The XSRF pair a page of the server would send (Tornado compares cookie and header).
    xsrf = "xsrf-of-a-jupyter-page"
    http.cookies.set("_xsrf", xsrf)
    # ...which Jupyter itself accepts without any token:
    assert (await http.get(llmgw.url("api/status"))).status_code == 200

    url = llmgw.url(MCP_PATH)
    browser = {**ACCEPT, "X-XSRFToken": xsrf, "Origin": "http://" + httpx.URL(url).netloc.decode()}
    refused = await http.post(url, headers=browser, json=INITIALIZE)
    assert refused.status_code == 401, refused.text
    assert refused.headers["www-authenticate"] == "Bearer"
    in_url = await http.post(
        url, params={"token": llmgw.token}, headers={**ACCEPT, "X-XSRFToken": xsrf}, json=INITIALIZE
    )
    assert in_url.status_code == 401, in_url.text
    as_cookie_only = await http.post(url, headers=ACCEPT, json=INITIALIZE)
    assert as_cookie_only.status_code == 401
    # The same request with the bearer token passes (so the 401s above are about the credential).
    with_token = await http.post(url, headers={**browser, **bearer(llmgw.token)}, json=INITIALIZE)
    assert with_token.status_code == 200, with_token.text


# -- Host/Origin and body limits --------------------------------------------------------------
async def test_rebinding_hosts_and_foreign_origins_are_refused(
    llmgw: Served, owner_api: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    url = llmgw.url(MCP_PATH)
    token = await grant_token(owner_api, "rebound")
    for credential in (llmgw.token, token):
        host = await http.post(
            url, headers={**bearer(credential), "Host": "evil.example:80"}, json=INITIALIZE
        )
        assert host.status_code == 421, host.text
        origin = await http.post(
            url, headers={**bearer(credential), "Origin": "http://evil.example"}, json=INITIALIZE
        )
        assert origin.status_code == 403, origin.text


def _post_head(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Send only the head of a POST declaring a huge body; the answer comes before any body."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        sock.sendall((head + "\r\n").encode("latin-1"))
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer


async def chunks(size: int) -> AsyncIterator[bytes]:
    """A body without a declared length (sent chunked), in 64 KiB pieces."""
    for start in range(0, size, 65536):
        yield b" " * min(65536, size - start)


async def test_bodies_over_the_limit_are_refused_for_every_token(
    llmgw: Served, owner_api: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    url = httpx.URL(llmgw.url(MCP_PATH))
    token = await grant_token(owner_api, "bulky")
    limit = llmgw.service.config.max_mcp_body_bytes
    for credential in (llmgw.token, token):
        headers = {**bearer(credential), "Content-Length": str(limit + 1)}
        path = url.raw_path.decode("ascii")
        status, answer = await asyncio.to_thread(_post_head, url.port or 80, path, headers)
        assert status == 413, answer
        chunked = await http.post(str(url), headers=bearer(credential), content=chunks(limit + 1))
        assert chunked.status_code == 413, chunked.text[:200]


# -- activity ---------------------------------------------------------------------------------
async def test_an_agents_requests_count_as_activity_and_strangers_do_not(
    llmgw: Served, jp_serverapp: Any, http: httpx.AsyncClient
) -> None:
    settings = jp_serverapp.web_app.settings
    settings.pop(ACTIVITY_KEY, None)
    url = llmgw.url(MCP_PATH)
    assert (await list_tools(http, url, "nobody")).status_code == 401
    assert ACTIVITY_KEY not in settings
    assert (await list_tools(http, url, llmgw.token)).status_code == 200
    assert ACTIVITY_KEY in settings


# -- the cache itself -------------------------------------------------------------------------
def test_the_token_cache_keeps_answers_while_the_stamp_holds() -> None:
    lookups: list[str] = []
    grants = {"llmgw_a": "grant:a", "llmgw_b": "grant:b"}
    stamp = [0]

    def lookup(token: str) -> str | None:
        lookups.append(token)
        return grants.get(token)

    cache: TokenCache[str] = TokenCache(lookup, lambda: stamp[0], limit=2)
    assert cache.caller("llmgw_a") == cache.caller("llmgw_a") == "grant:a"
    assert lookups == ["llmgw_a"]
    assert cache.caller("llmgw_x") is None and cache.caller("llmgw_x") is None
    assert lookups.count("llmgw_x") == 2  # refusals are never cached
    del grants["llmgw_a"]
    stamp[0] += 1  # another process changed the store
    assert cache.caller("llmgw_a") is None
    cache.caller("llmgw_b")
    assert cache.caller("llmgw_b") == "grant:b" and lookups[-1] == "llmgw_b"
    grants.update({"llmgw_c": "grant:c", "llmgw_d": "grant:d"})
    cache.caller("llmgw_c")
    assert len(cache) == 2
    cache.caller("llmgw_d")  # a third answer: the cache was full (2) and started over
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0

"""Issue 9 on the HTTP side: what one caller can do to the server over REST and MCP is bounded.

A grant's open MCP sessions are capped (the owner always keeps room), a revoked grant's sessions
are closed, no body is read before its credentials pass, numbers in queries and tool arguments
are bounded, a full disk is a 507 ``disk_full`` and never a bare 500, and a grant token opens no
REST route and no Jupyter API. Real Jupyter servers (pytest-jupyter, in process), real loopback
HTTP and raw sockets where the wire itself is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import socket
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import mcp_types as types
import pytest
from jupyter_fixtures import *  # noqa: F403 - pytest-jupyter fixtures, see the module
from jupyter_fixtures import Served, grant_token
from raw_mcp import ACCEPT, ALLOW_ALL, INITIALIZE, VERSION, bearer, in_session, open_session

from llmgw_jupyter.server.asgi_bridge import ASGIHandler
from llmgw_jupyter.server.handlers import MCP_PATH, SERVICE_KEY, is_disk_full, routes
from llmgw_jupyter.server.mcp_endpoint import (
    CALLER_SCOPE_KEY,
    LOCAL_HOSTS,
    LOCAL_ORIGINS,
    ProgressFn,
    build_mcp_app,
)
from llmgw_jupyter.server.service import GatewayService
from llmgw_jupyter.testing.mcp_agent import agent_session

WAIT = 30.0
MiB = 1024 * 1024


# -- helpers --------------------------------------------------------------------------------------
def limit_error(resp: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC error of a refusal by a server limit."""
    body = resp.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None, body
    error = dict(body["error"])
    assert error["data"]["category"] == "limit_exceeded", error
    return error


@pytest.fixture
async def capped(jp_serverapp: Any, http_server_client: Any, jp_base_url: str) -> Served:
    """The llmgw server with small session caps (set where the traitlets would set them)."""
    service: GatewayService = jp_serverapp.web_app.settings[SERVICE_KEY]
    service.config.max_mcp_sessions_per_grant = 3
    service.config.max_mcp_grant_sessions = 4
    await jp_serverapp.extension_manager.start_extension("llmgw_jupyter")
    assert service.state == "running", service.failure
    port = http_server_client.get_http_port()
    return Served(
        service, f"http://127.0.0.1:{port}{jp_base_url}", jp_serverapp.identity_provider.token
    )


# -- 1. sessions per caller -----------------------------------------------------------------------
async def test_a_grant_holds_at_most_its_sessions_and_the_owner_is_always_served(
    capped: Served,
) -> None:
    url = capped.url(MCP_PATH)
    async with (
        httpx.AsyncClient(
            base_url=capped.url("llmgw/api/"), headers=capped.auth, timeout=WAIT
        ) as rest,
        httpx.AsyncClient(timeout=WAIT) as http,
    ):
        flood = await grant_token(rest, "flood")
        sessions = [await open_session(http, url, flood) for _ in range(3)]

        refused = await http.post(url, headers=bearer(flood), json=INITIALIZE)
        assert refused.status_code == 429, refused.text
        error = limit_error(refused)
        assert error["data"]["limit"] == "max_mcp_sessions_per_grant"
        assert error["data"]["max"] == 3
        assert "c.LLMGatewayApp.max_mcp_sessions_per_grant" in error["message"]
        assert "grant:flood" in error["message"]
        assert "mcp-session-id" not in refused.headers

        # The owner is served whatever the grants hold.
        await open_session(http, url, capped.token)

        # Closing a session (DELETE) frees its slot.
        closed = await http.delete(
            url,
            headers={
                **bearer(flood),
                "mcp-session-id": sessions[0],
                "mcp-protocol-version": VERSION,
            },
        )
        assert closed.status_code == 200, closed.text
        sessions[0] = await open_session(http, url, flood)

        # All grants together: 3 + 1 = 4 is the cap of the test server.
        other = await grant_token(rest, "other")
        await open_session(http, url, other)
        crowded = await http.post(url, headers=bearer(other), json=INITIALIZE)
        assert crowded.status_code == 429, crowded.text
        error = limit_error(crowded)
        assert error["data"]["limit"] == "max_mcp_grant_sessions"
        assert "c.LLMGatewayApp.max_mcp_grant_sessions" in error["message"]

        owner_session = await open_session(http, url, capped.token)
        listed = await http.post(
            url,
            headers={
                **bearer(capped.token),
                "mcp-session-id": owner_session,
                "mcp-protocol-version": VERSION,
            },
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        )
        assert listed.status_code == 200 and "codex_request_async" in listed.text
        assert capped.service.mcp is not None and capped.service.mcp.sessions is not None
        assert capped.service.mcp.sessions.count("grant:flood") == 3


@dataclass(frozen=True)
class _Result:
    is_error: bool
    text: str
    structured: dict[str, Any] | None


class _NoTools:
    """The adapter's view of a gateway with nothing to offer: these tests count sessions."""

    def list_tools(self, caller: Any) -> list[Any]:
        return []

    async def call(
        self, tool: str, arguments: dict[str, Any], caller: Any, progress: ProgressFn | None = None
    ) -> _Result:
        return _Result(True, "no tools", None)


class _TokenHandler(ASGIHandler):
    """The bearer token is the caller key (``owner``, ``grant:a``...)."""

    def prepare(self) -> None:
        self.caller = self.request.headers.get("Authorization", "").removeprefix("Bearer ")

    def asgi_scope_extras(self) -> dict[str, Any]:
        return {CALLER_SCOPE_KEY: self.caller} if self.caller else {}


async def test_grants_sessions_come_on_top_of_the_owners_room(
    serve_tornado: Callable[[list[Any]], str],
) -> None:
    """The SDK's global cap is the owner's room plus the grants' total: a full house of grant
    sessions leaves every one of the owner's sessions available."""
    endpoint = build_mcp_app(
        _NoTools(),
        allowed_hosts=LOCAL_HOSTS,
        allowed_origins=LOCAL_ORIGINS,
        max_sessions=2,
        max_sessions_per_grant=2,
        max_grant_sessions=3,
    )
    url = serve_tornado([(r"/mcp", _TokenHandler, {"app": endpoint.asgi_app})]) + "/mcp"
    await endpoint.start()
    try:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            for key in ("grant:a", "grant:a", "grant:b"):
                await open_session(http, url, key)
            for key in ("grant:b", "grant:c"):
                refused = await http.post(url, headers=bearer(key), json=INITIALIZE)
                assert refused.status_code == 429
                assert limit_error(refused)["data"]["limit"] == "max_mcp_grant_sessions"
            for _ in range(2):
                await open_session(http, url, "owner")
            beyond = await http.post(url, headers=bearer("owner"), json=INITIALIZE)
            assert beyond.status_code == 503  # the owner's own room (the SDK's cap) is 2
    finally:
        await endpoint.stop()


# -- 2. revocation closes sessions ----------------------------------------------------------------
async def test_revoking_a_grant_closes_its_open_sessions(
    llmgw: Served, owner_api: httpx.AsyncClient
) -> None:
    url = llmgw.url(MCP_PATH)
    token = await grant_token(owner_api, "leaving")
    async with httpx.AsyncClient(timeout=WAIT) as http:
        session = await open_session(http, url, token)
        on_session = in_session(token, session)
        stream_open = asyncio.Event()

        async def listen() -> int:
            """The session's standalone SSE stream, read until the server ends it."""
            headers = {**on_session, "Accept": "text/event-stream"}
            async with http.stream("GET", url, headers=headers) as resp:
                assert resp.status_code == 200, await resp.aread()
                stream_open.set()
                received = 0
                async for chunk in resp.aiter_bytes():
                    received += len(chunk)
                return received

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(stream_open.wait(), WAIT)

        assert (await owner_api.delete("grants/leaving")).status_code == 200
        # Closed by the time the revocation answers...
        assert llmgw.service.mcp is not None and llmgw.service.mcp.sessions is not None
        assert llmgw.service.mcp.sessions.count("grant:leaving") == 0
        # ...so the stream ends (it would stay open for as long as the client keeps it, idle
        # timeout or not, if the session were not closed).
        await asyncio.wait_for(listener, WAIT)

        again = await http.post(
            url, headers=on_session, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"}
        )
        assert again.status_code in (401, 404) and "codex_request" not in again.text
        fresh = await http.post(url, headers=bearer(token), json=INITIALIZE)
        assert fresh.status_code == 401


# -- 3. credentials before body, body limit -------------------------------------------------------
@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after answering


async def raw_post(
    port: int, path: str, headers: dict[str, str], body: bytes, *, declared: int | None = None
) -> RawAnswer:
    """POST over a plain socket: the head, then ``body`` (chunked when ``declared`` is None, else
    with that Content-Length whatever is sent), while the answer is read as it comes.

    Blocking sockets in threads, so the server (on this loop) runs meanwhile and an early
    answer is read even when the server then resets the connection under our upload.
    """
    return await asyncio.to_thread(_raw_post, port, path, headers, body, declared)


def _raw_post(
    port: int, path: str, headers: dict[str, str], body: bytes, declared: int | None
) -> RawAnswer:
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head.append("Transfer-Encoding: chunked" if declared is None else f"Content-Length: {declared}")
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:

        def upload() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
                step = 64 * 1024
                for start in range(0, len(body), step):
                    part = body[start : start + step]
                    if declared is None:
                        part = f"{len(part):x}\r\n".encode() + part + b"\r\n"
                    sock.sendall(part)
                if declared is None:
                    sock.sendall(b"0\r\n\r\n")

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        received = b""
        closed = False
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            if not data:
                closed = True
                break
            received += data
            head_end = received.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            length = re.search(rb"(?im)^content-length:\s*(\d+)", received[:head_end])
            if length is not None and len(received) >= head_end + 4 + int(length.group(1)):
                if closed or _peer_closed(sock):
                    closed = True
                break
        uploader.join(WAIT)
    raw_head, _, answer_body = received.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    answer_headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    return RawAnswer(int(status_line.split()[1]), answer_headers, answer_body, closed)


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the server ends the connection after its answer (EOF or reset)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def port_of(served: Served) -> int:
    match = re.match(r"http://127\.0\.0\.1:(\d+)/", served.base_url)
    assert match is not None
    return int(match.group(1))


def mcp_path(served: Served) -> str:
    return "/" + served.base_url.split("/", 3)[3] + MCP_PATH


async def test_no_body_is_read_before_the_credentials_pass(llmgw: Served) -> None:
    """200 MB announced, 64 KiB sent: the refusal comes at once and the connection is closed,
    so the rest is never read (today the server waited for all 200 MB first)."""
    port, path = port_of(llmgw), mcp_path(llmgw)
    json_headers = {"Content-Type": "application/json", **ACCEPT}
    for headers, status in [
        (json_headers, 401),
        ({**json_headers, "Authorization": "Bearer wrong"}, 401),
        (
            {
                **json_headers,
                "Authorization": f"Bearer {llmgw.token}",
                "Origin": "http://e.example",
            },
            403,
        ),
    ]:
        answer = await raw_post(port, path, headers, b"x" * 65536, declared=200_000_000)
        assert answer.status == status, (headers, answer)
        assert answer.closed, "the server must close instead of reading the announced body"
        if status == 401:
            assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_an_owner_body_over_the_limit_is_413_naming_it(llmgw: Served) -> None:
    port, path = port_of(llmgw), mcp_path(llmgw)
    limit = llmgw.service.config.max_mcp_body_bytes
    assert limit == 4 * MiB
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {llmgw.token}",
        **ACCEPT,
    }

    declared = await raw_post(port, path, headers, b"", declared=limit + 1)
    assert declared.status == 413, declared
    error = limit_error(httpx.Response(413, content=declared.body))
    assert error["data"] == {
        "category": "limit_exceeded",
        "limit": "max_mcp_body_bytes",
        "max": limit,
    }
    assert str(limit) in error["message"]
    assert "c.LLMGatewayApp.max_mcp_body_bytes" in error["message"]
    assert declared.closed

    chunked = await raw_post(port, path, headers, b" " * (limit + MiB), declared=None)
    assert chunked.status == 413, chunked
    assert "c.LLMGatewayApp.max_mcp_body_bytes" in chunked.body.decode()

    # Within the limit a large request is served (here: a prompt of 1 MiB through the quick path).
    async with httpx.AsyncClient(timeout=WAIT) as http:
        session = await open_session(http, llmgw.url(MCP_PATH), llmgw.token)
        call = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "llm_job_status", "arguments": {"job_id": "j" * MiB}},
        }
        served = await http.post(
            llmgw.url(MCP_PATH),
            headers={
                **bearer(llmgw.token),
                "mcp-session-id": session,
                "mcp-protocol-version": VERSION,
            },
            json=call,
        )
        assert served.status_code == 200, served.text[:500]
        assert served.json()["result"]["isError"] is True  # no such job: an answer, not a 413


# -- 4. integers ----------------------------------------------------------------------------------
async def test_numbers_out_of_range_are_invalid_input_naming_the_field(
    llmgw: Served, owner_api: httpx.AsyncClient
) -> None:
    submitted = await owner_api.post("jobs", json={"prompt": "numbers"})
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["structured"]["job"]["id"]
    huge = [str(2**62), str(2**63), str(2**70), "9" * 5000, "1e400"]
    cases = [
        (f"jobs/{job_id}/result", "offset"),
        (f"jobs/{job_id}/events", "after"),
        ("stream", "after"),
        ("jobs", "offset"),
        ("audit", "offset"),
    ]
    for path, name in cases:
        for value in huge:
            resp = await owner_api.get(path, params={name: value})
            assert resp.status_code == 400, (path, name, value[:30], resp.status_code, resp.text)
            error = resp.json()["error"]
            assert error["category"] == "invalid_input" and error["field"] == name, error
            assert f"{name}: must be an integer between 0 and {2**31 - 1}" == error["message"]

    async with agent_session(llmgw.url(MCP_PATH), llmgw.token, WAIT) as agent:
        for tool, arguments, field in [
            ("llm_job_result", {"job_id": job_id, "offset": 2**63}, "offset"),
            (
                "llm_job_watch",
                {"job_id": job_id, "after_seq": 2**70, "timeout_seconds": 0},
                "after_seq",
            ),
            ("llm_job_status", {"job_id": job_id, "after_seq": 2**64}, "after_seq"),
            ("llm_job_list", {"offset": 2**63}, "offset"),
        ]:
            result = await agent.call_tool(tool, arguments)
            assert result.is_error is True, (tool, result)
            assert result.structured_content is None, (tool, result.content)  # issue 10
            assert result.meta is not None, (tool, result.content)
            error = result.meta["llmgw/error"]
            assert error["category"] == "invalid_input", (tool, error)
            assert error["field"] == field, (tool, error)
            assert isinstance(result.content[0], types.TextContent)
            assert field in result.content[0].text


# -- 5. a full disk -------------------------------------------------------------------------------
async def test_a_full_store_is_507_disk_full_never_a_bare_500(
    llmgw: Served, owner_api: httpx.AsyncClient
) -> None:
    """SQLite's own SQLITE_FULL (its page limit reached) while the owner creates grants."""
    db = llmgw.service.gateway.store.db
    row = db.query_one("PRAGMA page_count")
    assert row is not None
    pages = int(row[0])
    db.execute(f"PRAGMA max_page_count = {pages}")
    try:
        statuses: list[int] = []
        for number in range(200):
            resp = await owner_api.post(
                "grants", json={"name": f"g{number}", "policy": {**ALLOW_ALL, "hide": ["x" * 900]}}
            )
            statuses.append(resp.status_code)
            if resp.status_code != 201:
                break
        assert statuses[-1] == 507, statuses
        error = resp.json()["error"]
        assert error["category"] == "disk_full", error
        assert "disk is full" in error["message"]
    finally:
        db.execute("PRAGMA max_page_count = 1073741823")


def test_enospc_and_sqlite_full_are_recognised_as_disk_full() -> None:
    with pytest.raises(OSError) as full, open("/dev/full", "wb", buffering=0) as device:
        device.write(b"x")
    assert full.value.errno == errno.ENOSPC and is_disk_full(full.value)
    assert not is_disk_full(OSError(errno.EACCES, "denied"))
    assert not is_disk_full(ValueError("disk is full"))
    try:  # how the store lets it escape: its ROLLBACK fails after SQLite's own
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError:
            raise sqlite3.OperationalError("cannot rollback - no transaction is active")  # noqa: B904
    except sqlite3.OperationalError as chained:
        assert chained.__context__ is not None and is_disk_full(chained)


# -- 6. a grant token reaches no REST route and no Jupyter API ------------------------------------
async def test_a_grant_token_opens_no_rest_route_and_no_jupyter_api(
    llmgw: Served, owner_api: httpx.AsyncClient
) -> None:
    submitted = await owner_api.post("jobs", json={"prompt": "the owner's secret job"})
    job_id = submitted.json()["structured"]["job"]["id"]
    token = await grant_token(owner_api, "outsider")
    values = {"job_id": job_id, "decision": "approve"}
    probes: list[tuple[str, str]] = []
    for pattern, handler, _ in routes(llmgw.service):
        if pattern.startswith(MCP_PATH):
            continue
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: values.get(m.group(1), "x"), pattern)
        verbs = ("get", "post", "put", "patch", "delete")
        probes += [(verb.upper(), path) for verb in verbs if verb in vars(handler)]
    probes += [
        ("GET", "api/contents"),
        ("POST", "api/contents"),
        ("GET", "api/kernels"),
        ("POST", "api/kernels"),
        ("GET", "api/sessions"),
    ]
    assert ("GET", "llmgw/api/stream") in probes and ("DELETE", "llmgw/api/grants/x") in probes
    async with httpx.AsyncClient(base_url=llmgw.base_url, timeout=WAIT) as http:
        for scheme in ("token", "Bearer"):
            for method, path in probes:
                resp = await http.request(
                    method,
                    path,
                    headers={"Authorization": f"{scheme} {token}"},
                    params={"job": job_id},
                    json={"name": "python3"} if method != "GET" else None,
                )
                assert resp.status_code in (401, 403), (scheme, method, path, resp.status_code)
                assert job_id not in resp.text and "secret" not in resp.text, (method, path)
    assert (await owner_api.get(f"jobs/{job_id}")).status_code == 200  # the job is there


async def test_refusals_before_the_body_close_the_connection_and_say_so(llmgw: Served) -> None:
    """A refusal that leaves the body unread ends the connection: ``Connection: close`` keeps a
    pooled client from sending its next request on it (without it, about one in thirty of
    these requests failed with a read error instead of their 401/403)."""
    url = llmgw.url(MCP_PATH)
    evil = {**bearer(llmgw.token), "Origin": "http://evil.example"}
    async with httpx.AsyncClient(timeout=WAIT) as http:
        for _ in range(100):
            for headers, status in ((ACCEPT, 401), (evil, 403)):
                resp = await http.post(url, headers=headers, json=INITIALIZE)
                assert resp.status_code == status, resp.text
                assert resp.headers["connection"] == "close"

"""The opt-in direct MCP listener (``LLMGatewayApp.mcp_direct_port``) of a real ``jupyter server``.

The same endpoint as ``{base_url}llmgw/mcp`` on a loopback port of its own, served by uvicorn on
Jupyter's loop: third-party clients (the official TypeScript and Python SDKs, fastmcp on the
stateless 2026 revision) run the whole scenario of ``test_mcp_third_party_clients`` against it;
a grant's policy applies there, a revoked grant is refused and its open stream ends, Host/Origin
and the body cap are checked, a non-loopback host is refused, and the port closes with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from raw_mcp import ACCEPT, INITIALIZE, bearer, in_session, open_session
from test_mcp_third_party_clients import POLICY, Setup, connected, scenario

from llmgw_jupyter.server.mcp_direct import loopback_host, loopback_origin
from llmgw_jupyter.testing.codex_home import write_codex_home
from llmgw_jupyter.testing.jupyter_process import JupyterProcess, free_port, start_jupyter
from llmgw_jupyter.testing.mcp_agent import agent_session
from llmgw_jupyter.testing.mock_responses import MockResponsesServer

WAIT = 60.0
BODY_CAP = 64 * 1024
LISTENING = re.compile(r"direct MCP listener at (http://\S+/mcp)")


def direct_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/mcp"


def refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_for_log(server: JupyterProcess, pattern: re.Pattern[str], timeout: float = WAIT) -> str:
    """The first match of ``pattern`` in the server's log (a subprocess: its log is all we see)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.search(server.log())
        if found is not None:
            return found.group(0)
        if server.process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{pattern.pattern!r} not in the server log:\n{server.log()[-4000:]}")


@pytest.fixture(scope="module")
def model() -> Iterator[MockResponsesServer]:
    with MockResponsesServer() as server:
        yield server


@pytest.fixture(scope="module")
def direct(
    tmp_path_factory: pytest.TempPathFactory, model: MockResponsesServer, codex_path: str
) -> Iterator[tuple[JupyterProcess, str]]:
    """One server with the direct listener for the header, grant and revocation tests."""
    workdir = tmp_path_factory.mktemp("jupyter")
    port = free_port()
    server = start_jupyter(
        workdir,
        data_dir=workdir / "llmgw-data",
        codex_path=codex_path,
        codex_home=write_codex_home(workdir / "codex-home", model.base_url),
        args=[
            f"--LLMGatewayApp.mcp_direct_port={port}",
            f"--LLMGatewayApp.max_mcp_body_bytes={BODY_CAP}",
        ],
    )
    yield server, direct_url(port)
    server.stop()


@pytest.fixture
async def rest(direct: tuple[JupyterProcess, str]) -> AsyncIterator[httpx.AsyncClient]:
    server, _ = direct
    async with httpx.AsyncClient(
        base_url=server.api_url, headers=server.auth, timeout=WAIT
    ) as client:
        yield client


async def new_grant(rest: httpx.AsyncClient, name: str, policy: dict[str, Any]) -> str:
    created = await rest.post("grants", json={"name": name, "policy": policy})
    assert created.status_code == 201, created.text
    return str(created.json()["token"])


# -- what counts as loopback ------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", " LocalHost "])
def test_loopback_hosts_are_accepted(host: str) -> None:
    assert loopback_host(host) in ("127.0.0.1", "::1", "localhost")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.5", "127.0.0.2", "my.host"])
def test_other_hosts_are_refused_with_the_rule(host: str) -> None:
    with pytest.raises(ValueError, match=r"^mcp_direct_host: .* loopback only"):
        loopback_host(host)


@pytest.mark.parametrize(
    ("origin", "passes"),
    [
        ("http://127.0.0.1:3000", True),
        ("https://localhost", True),
        ("http://[::1]:8080", True),
        ("http://evil.example", False),
        ("http://localhost.evil.example", False),
        ("http://127.0.0.1.evil.example", False),
        ("null", False),
        ("file://", False),
        ("http://127.0.0.1:99999", False),
    ],
)
def test_only_loopback_origins_pass(origin: str, passes: bool) -> None:
    assert loopback_origin(origin) is passes


# -- third-party clients ------------------------------------------------------------------------
@pytest.fixture(params=["typescript", "python", "fastmcp"])
def client_setup(
    request: pytest.FixtureRequest, tmp_path: Path, model: MockResponsesServer, codex_path: str
) -> Iterator[tuple[Setup, str]]:
    """A server of its own per client (its policy file and counters), with the listener."""
    policy_file = tmp_path / "owner-policy.json"
    policy_file.write_text(json.dumps(POLICY))
    port = free_port()
    server = start_jupyter(
        tmp_path,
        data_dir=tmp_path / "llmgw-data",
        codex_path=codex_path,
        codex_home=write_codex_home(tmp_path / "codex-home", model.base_url),
        args=[
            f"--LLMGatewayApp.owner_policy={policy_file}",
            f"--LLMGatewayApp.mcp_direct_port={port}",
        ],
    )
    yield Setup(server, policy_file), direct_url(port)
    server.stop()


async def test_third_party_clients_over_the_direct_listener(
    client_setup: tuple[Setup, str],
    request: pytest.FixtureRequest,
) -> None:
    """The whole third-party scenario (tools, refusals, progress, cancellation, -32602 for an
    unknown tool, ``tools/list_changed`` after a policy edit) against the direct URL."""
    setup, url = client_setup
    kind = request.node.callspec.params["client_setup"]
    async with connected(kind, url, setup.server.token) as agent:
        await scenario(agent, setup)


# -- the same rules as on /llmgw/mcp ------------------------------------------------------------
async def test_a_grants_policy_applies_on_the_direct_listener(
    direct: tuple[JupyterProcess, str], rest: httpx.AsyncClient
) -> None:
    _, url = direct
    policy = {
        "version": "1",
        "default": "allow",
        "tools": {"llm_job_list": {"action": "deny", "reason": "not for this agent"}},
    }
    token = await new_grant(rest, "direct-denied", policy)
    async with agent_session(url, token, WAIT) as session:
        listed = {tool.name for tool in (await session.list_tools()).tools}
        assert "llm_job_status" in listed and "llm_job_list" not in listed
        denied = await session.call_tool("llm_job_list", {})
        assert denied.is_error
        assert "[POLICY DENIED] not for this agent" in str(denied.content[0])
    async with httpx.AsyncClient(timeout=WAIT) as http:  # the quick path (JSON answer) too
        session_id = await open_session(http, url, token)
        call = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "llm_job_list", "arguments": {}},
        }
        quick = await http.post(url, headers=in_session(token, session_id), json=call)
        assert quick.status_code == 200
        assert quick.headers["content-type"] == "application/json"
        result = quick.json()["result"]
        assert result["isError"] is True
        assert result["content"][0]["text"].startswith("[POLICY DENIED] not for this agent")


async def test_a_revoked_grant_is_refused_and_its_stream_ends(
    direct: tuple[JupyterProcess, str], rest: httpx.AsyncClient
) -> None:
    _, url = direct
    token = await new_grant(rest, "direct-revoked", {"version": "1", "default": "allow"})
    ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
    async with httpx.AsyncClient(timeout=WAIT) as http:
        session_id = await open_session(http, url, token)
        headers = in_session(token, session_id)
        assert (await http.post(url, headers=headers, json=ping)).json()["result"] == {}
        stream_headers = {**headers, "Accept": "text/event-stream"}
        async with http.stream("GET", url, headers=stream_headers) as stream:
            assert stream.status_code == 200
            chunks = stream.aiter_bytes()
            assert await asyncio.wait_for(anext(chunks), WAIT)  # the stream is open
            assert (await rest.delete("grants/direct-revoked")).status_code == 200

            async def until_closed() -> None:
                async for _ in chunks:
                    pass

            await asyncio.wait_for(until_closed(), WAIT)  # the session was closed
        refused = await http.post(url, headers=headers, json=ping)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        again = await http.post(url, headers=bearer(token), json=INITIALIZE)
        assert again.status_code == 401


async def test_host_origin_token_path_and_body_are_checked(
    direct: tuple[JupyterProcess, str],
) -> None:
    server, url = direct
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    owner = bearer(server.token)
    async with httpx.AsyncClient(timeout=WAIT) as http:

        async def status(headers: dict[str, str], target: str = url, **kw: Any) -> int:
            sent = await http.post(target, headers=headers, **(kw or {"json": INITIALIZE}))
            return sent.status_code

        assert await status(owner) == 200
        assert await status({**owner, "Host": f"localhost:{port}"}) == 200
        assert await status({**owner, "Origin": "http://localhost:5173"}) == 200
        # DNS rebinding: only this listener's own loopback host:port names it.
        assert await status({**owner, "Host": f"evil.example:{port}"}) == 421
        assert await status({**owner, "Host": f"127.0.0.1:{server.port}"}) == 421
        assert await status({**owner, "Origin": "http://evil.example"}) == 403
        assert await status({**owner, "Origin": "null"}) == 403
        # One bearer token: none, a wrong one or two (ambiguous) is 401.
        for headers in (ACCEPT, {**ACCEPT, "Authorization": "Bearer wrong"}):
            assert await status(headers) == 401
        twice = [*owner.items(), ("Authorization", f"Bearer {server.token}")]
        assert (await http.post(url, headers=twice, json=INITIALIZE)).status_code == 401
        assert await status(owner, target=url.replace("/mcp", "/api/status")) == 404
        # The body cap (max_mcp_body_bytes), declared or not.
        big = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"' + b"x" * BODY_CAP
        assert await status(owner, content=big + b'"}}') == 413

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"x" * (BODY_CAP // 2)

        assert await status(owner, content=chunked()) == 413


async def test_a_non_loopback_host_is_refused_at_start(tmp_path: Path, codex_path: str) -> None:
    """Refused with an error naming the setting and the rule; the listener stays off, the rest of
    the gateway (with its configuration) serves as usual."""
    port = free_port()
    server = start_jupyter(
        tmp_path,
        data_dir=tmp_path / "llmgw-data",
        codex_path=codex_path,
        args=[
            f"--LLMGatewayApp.mcp_direct_port={port}",
            "--LLMGatewayApp.mcp_direct_host=0.0.0.0",
        ],
    )
    try:
        said = wait_for_log(server, re.compile(r".*direct MCP listener refused.*"))
        assert "LLMGatewayApp.mcp_direct_host: '0.0.0.0' is not allowed" in said
        assert "loopback only" in said and "[E " in said
        assert refuses_connections(port)
        assert "direct MCP listener at" not in server.log()
        async with httpx.AsyncClient(timeout=WAIT) as http:  # Jupyter's own MCP route serves
            opened = await http.post(server.mcp_url, headers=bearer(server.token), json=INITIALIZE)
            assert opened.status_code == 200, opened.text
    finally:
        server.stop()


async def test_a_port_in_use_is_reported_and_the_rest_serves(
    tmp_path: Path, codex_path: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = start_jupyter(
            tmp_path,
            data_dir=tmp_path / "llmgw-data",
            codex_path=codex_path,
            args=[f"--LLMGatewayApp.mcp_direct_port={port}"],
        )
        try:
            said = wait_for_log(server, re.compile(r".*direct MCP listener on .* did not start.*"))
            assert f"port {port}" in said and "Address already in use" in said
            async with httpx.AsyncClient(timeout=WAIT) as http:
                opened = await http.post(
                    server.mcp_url, headers=bearer(server.token), json=INITIALIZE
                )
                assert opened.status_code == 200, opened.text
        finally:
            server.stop()


async def test_a_free_port_is_logged_and_closed_with_the_server(
    tmp_path: Path, codex_path: str
) -> None:
    server = start_jupyter(
        tmp_path,
        data_dir=tmp_path / "llmgw-data",
        codex_path=codex_path,
        args=["--LLMGatewayApp.mcp_direct_port=0"],
    )
    try:
        url = LISTENING.search(wait_for_log(server, LISTENING))
        assert url is not None
        port = int(url.group(1).rsplit(":", 1)[1].split("/")[0])
        assert port not in (0, server.port)
        async with agent_session(url.group(1), server.token, WAIT) as session:
            assert (await session.list_tools()).tools
        async with httpx.AsyncClient(timeout=WAIT) as http:
            session_id = await open_session(http, url.group(1), server.token)
            headers = {**in_session(server.token, session_id), "Accept": "text/event-stream"}
            async with http.stream("GET", url.group(1), headers=headers) as stream:
                chunks = stream.aiter_bytes()
                assert await asyncio.wait_for(anext(chunks), WAIT)
                server.stop()  # with a session and its stream open: within the stop timeout
                with contextlib.suppress(httpx.TransportError):
                    async for _ in chunks:
                        pass
    finally:
        server.stop()
    assert refuses_connections(port)
    assert "Exception in ASGI application" not in server.log()

"""External agents over MCP against a real ``jupyter server`` subprocess (no second port).

The official MCP Python client speaks streamable HTTP to ``{base_url}llmgw/mcp``; jobs run the
real Codex CLI against the mock model. The owner acts through the REST API meanwhile (approvals,
grants), exactly as the lab panel does.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import psutil
import pytest
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from raw_mcp import ACCEPT, INITIALIZE, bearer

from llmgw_jupyter.testing.codex_home import write_codex_home
from llmgw_jupyter.testing.jupyter_process import JupyterProcess, start_jupyter
from llmgw_jupyter.testing.mcp_agent import agent_session
from llmgw_jupyter.testing.mock_responses import MockResponsesServer
from llmgw_jupyter.tools import TOOL_NAMES

WAIT = 60.0


@pytest.fixture(scope="module")
def model() -> Iterator[MockResponsesServer]:
    with MockResponsesServer() as server:
        yield server


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model: MockResponsesServer, codex_path: str
) -> Iterator[JupyterProcess]:
    """One server for the module: tests use their own grants and jobs, so they do not mix."""
    workdir = tmp_path_factory.mktemp("jupyter")
    home = write_codex_home(workdir / "codex-home", model.base_url)
    jupyter = start_jupyter(
        workdir, data_dir=workdir / "llmgw-data", codex_path=codex_path, codex_home=home
    )
    yield jupyter
    jupyter.stop()


def mcp_session(url: str, token: str) -> Any:
    return agent_session(url, token, WAIT)


@pytest.fixture
async def rest(server: JupyterProcess) -> AsyncIterator[httpx.AsyncClient]:
    """The owner's REST client (Jupyter token)."""
    async with httpx.AsyncClient(
        base_url=server.url + "llmgw/api/", headers=server.auth, timeout=WAIT
    ) as client:
        yield client


def structured(result: types.CallToolResult) -> dict[str, Any]:
    assert result.is_error is False, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


def text(result: types.CallToolResult) -> str:
    assert isinstance(result.content[0], types.TextContent)
    return result.content[0].text


async def watch_to_end(
    session: ClientSession, job_id: str, progress: list[str] | None = None
) -> dict[str, Any]:
    """llm_job_watch until the job ends; progress notifications are collected."""

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        if progress is not None:
            progress.append(message or "")

    after = 0
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        watched = structured(
            await session.call_tool(
                "llm_job_watch",
                {"job_id": job_id, "after_seq": after, "timeout_seconds": 10},
                progress_callback=on_progress,
            )
        )
        after = watched["next_after_seq"]
        if watched["done"]:
            return dict(watched["job"])
    raise AssertionError(f"job {job_id} did not end")


async def grant(rest: httpx.AsyncClient, name: str, policy: dict[str, Any]) -> str:
    resp = await rest.post("grants", json={"name": name, "policy": policy})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


async def test_the_extension_is_enabled_by_its_installed_config() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    listing = out.stdout + out.stderr
    line = next(x for x in listing.splitlines() if x.strip().startswith("llmgw_jupyter "))
    assert "enabled" in line
    assert "llmgw_jupyter  \x1b[32mOK" in listing or "llmgw_jupyter  OK" in listing


async def test_an_agent_runs_watches_forks_resumes_and_cancels(
    server: JupyterProcess, model: MockResponsesServer
) -> None:
    async with mcp_session(server.mcp_url, server.token) as session:
        assert session.initialize_result is not None
        assert session.initialize_result.server_info.name == "llmgw"
        assert "codex_request_async" in (session.initialize_result.instructions or "")
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == set(TOOL_NAMES)
        status = tools["llm_job_status"]
        assert status.annotations is not None and status.annotations.read_only_hint is True
        assert tools["codex_request_async"].annotations is not None
        assert tools["codex_request_async"].annotations.read_only_hint is False
        assert "prompt" in tools["codex_request_async"].input_schema["properties"]
        assert tools["llm_job_result"].output_schema is not None

        prompt = "hello from an agent [mock:steps=2,step_delay=0.2]"
        submitted = structured(await session.call_tool("codex_request_async", {"prompt": prompt}))
        job_id = submitted["job"]["id"]
        assert submitted["job"]["caller"] == "owner"
        progress: list[str] = []
        job = await watch_to_end(session, job_id, progress)
        assert job["status"] == "succeeded"
        assert any(m.startswith("item.completed") for m in progress), progress
        result = structured(await session.call_tool("llm_job_result", {"job_id": job_id}))
        assert result["final_message"] == "echo: hello from an agent [mock:steps=2,step_delay=0.2]"
        parent = result["session_id"]
        assert parent and result["exit_code"] == 0

        fork = structured(
            await session.call_tool(
                "codex_fork_session", {"session_id": parent, "prompt": "fork it"}
            )
        )
        fork_job = await watch_to_end(session, fork["job"]["id"])
        assert fork_job["status"] == "succeeded"
        assert fork_job["parent_session_id"] == parent
        assert fork_job["session_id"] not in (None, parent)

        resumed = structured(
            await session.call_tool(
                "codex_request_async", {"session_id": parent, "prompt": "and again"}
            )
        )
        resumed_job = await watch_to_end(session, resumed["job"]["id"])
        assert resumed_job["status"] == "succeeded" and resumed_job["session_id"] == parent
        kinds = [r.turn_metadata.get("history_initialization") for r in model.requests[-2:]]
        assert sorted(kinds) == ["cold_fork", "cold_resume"]

        sessions = structured(await session.call_tool("llm_session_list", {}))["sessions"]
        by_id = {s["session_id"]: s for s in sessions}
        assert by_id[parent]["children"] == [fork_job["session_id"]]

        waited = structured(
            await session.call_tool("codex_request", {"prompt": "sync one", "wait_seconds": 30})
        )
        assert waited["done"] is True and waited["final_message"] == "echo: sync one"

        slow = structured(
            await session.call_tool("codex_request_async", {"prompt": "slow [mock:delay=60]"})
        )
        slow_id = slow["job"]["id"]
        after = 0
        while True:  # until Codex has started its turn (it then waits on the model)
            watched = structured(
                await session.call_tool(
                    "llm_job_watch", {"job_id": slow_id, "after_seq": after, "timeout_seconds": 10}
                )
            )
            after = watched["next_after_seq"]
            if any(e["type"] == "turn.started" for e in watched["events"]):
                break
            assert not watched["done"], watched
        cancelled = structured(await session.call_tool("llm_job_cancel", {"job_id": slow_id}))
        assert cancelled["job"]["status"] == "cancelled"


CI_POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "hide": ["llm_session_list"],
    "tools": {
        "llm_job_list": {"action": "deny", "reason": "CI agents do not browse jobs"},
        "llm_job_status": {"limits": [{"counter": "status", "window": "minute", "max": 2}]},
        "codex_request": {"action": "require_approval", "approval": {"timeout": 60}},
    },
}


async def pending_approval(rest: httpx.AsyncClient, caller: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        approvals = (await rest.get("approvals")).json()["approvals"]
        mine = [a for a in approvals if a["caller"] == caller]
        if mine:
            return dict(mine[0])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no pending approval for {caller}")


async def test_a_grant_is_held_to_its_policy(
    server: JupyterProcess, rest: httpx.AsyncClient
) -> None:
    token = await grant(rest, "ci-bot", CI_POLICY)
    async with mcp_session(server.mcp_url, token) as agent:
        names = {tool.name for tool in (await agent.list_tools()).tools}
        # Hidden and never-allowed tools are not listed; calling them still reaches the gateway.
        assert names == set(TOOL_NAMES) - {"llm_session_list", "llm_job_list"}

        hidden = await agent.call_tool("llm_session_list", {})
        assert hidden.is_error is True and text(hidden).startswith("[POLICY DENIED]")

        denied = await agent.call_tool("llm_job_list", {})
        assert denied.is_error is True
        assert text(denied).startswith("[POLICY DENIED] CI agents do not browse jobs")

        # Approval: the agent's synchronous call waits until the owner approves over REST.
        call = asyncio.create_task(
            agent.call_tool("codex_request", {"prompt": "please", "wait_seconds": 30})
        )
        approval = await pending_approval(rest, "grant:ci-bot")
        assert approval["tool"] == "codex_request" and not call.done()
        decided = await rest.post(f"approvals/{approval['id']}/approve")
        assert decided.status_code == 200
        answer = structured(await asyncio.wait_for(call, WAIT))
        assert answer["done"] is True and answer["final_message"] == "echo: please"
        job_id = answer["job"]["id"]
        assert answer["job"]["caller"] == "grant:ci-bot"

        for _ in range(2):
            structured(await agent.call_tool("llm_job_status", {"job_id": job_id}))
        limited = await agent.call_tool("llm_job_status", {"job_id": job_id})
        assert limited.is_error is True and text(limited).startswith("[POLICY DENIED]")
        assert limited.structured_content is None  # issue 10: errors are text plus _meta
        assert limited.meta is not None
        assert limited.meta["llmgw/error"]["category"] == "rate_limited"
        assert 0 < limited.meta["llmgw/error"]["retry_after_seconds"] <= 60

    records = (await rest.get("audit", params={"caller": "grant:ci-bot"})).json()["records"]
    decisions = {(r["tool"], r["decision"]) for r in records}
    assert ("llm_session_list", "deny") in decisions  # the hidden tool's attempt is audited
    assert ("llm_job_list", "deny") in decisions
    assert ("codex_request", "approved") in decisions
    assert ("llm_job_status", "deny") in decisions


async def test_a_grant_token_opens_mcp_and_nothing_else(
    server: JupyterProcess, rest: httpx.AsyncClient
) -> None:
    token = await grant(rest, "only-mcp", {"version": "1", "default": "allow"})
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
        for scheme in ("token", "Bearer"):
            headers = {"Authorization": f"{scheme} {token}"}
            for path in (
                "api/kernels",
                "api/contents",
                "api/sessions",
                "api/kernelspecs",
                "api/terminals",
                "llmgw/api/jobs",
                "llmgw/api/summary",
                "llmgw/api/grants",
            ):
                resp = await http.get(path, headers=headers)
                assert resp.status_code == 403, (scheme, path, resp.status_code)
            started = await http.post("api/kernels", headers=headers, json={"name": "python3"})
            assert started.status_code == 403
            approve = await http.post("llmgw/api/approvals/x/approve", headers=headers)
            assert approve.status_code == 403
            mcp = await http.post("llmgw/mcp", headers={**headers, **ACCEPT}, json=INITIALIZE)
            assert mcp.status_code == 200, mcp.text


async def test_wrong_and_revoked_tokens_get_401(
    server: JupyterProcess, rest: httpx.AsyncClient
) -> None:
    token = await grant(rest, "short-lived", {"version": "1", "default": "allow"})
    list_tools = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    async with httpx.AsyncClient(timeout=WAIT) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"}):
            resp = await http.post(server.mcp_url, headers={**headers, **ACCEPT}, json=INITIALIZE)
            assert resp.status_code == 401
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert "tools" not in resp.text

        opened = await http.post(server.mcp_url, headers=bearer(token), json=INITIALIZE)
        assert opened.status_code == 200
        session = {
            "mcp-session-id": opened.headers["mcp-session-id"],
            "mcp-protocol-version": "2025-06-18",
        }
        listed = await http.post(
            server.mcp_url, headers={**bearer(token), **session}, json=list_tools
        )
        assert listed.status_code == 200 and "codex_request" in listed.text

        assert (await rest.delete("grants/short-lived")).status_code == 200
        after = await http.post(
            server.mcp_url, headers={**bearer(token), **session}, json=list_tools
        )
        assert after.status_code == 401  # the very next request, same open session
        assert "codex_request" not in after.text

    with pytest.raises(BaseException) as refused:  # the client wraps it in task-group errors
        async with mcp_session(server.mcp_url, token):
            pass
    assert any(isinstance(leaf, MCPError) for leaf in leaves(refused.value)), refused.value


def leaves(error: BaseException) -> list[BaseException]:
    nested = getattr(error, "exceptions", None)
    if not nested:
        return [error]
    return [leaf for inner in nested for leaf in leaves(inner)]


async def test_dns_rebinding_protection(server: JupyterProcess) -> None:
    owner = {"Authorization": f"Bearer {server.token}", **ACCEPT}
    async with httpx.AsyncClient(timeout=WAIT) as http:
        evil = await http.post(
            server.mcp_url, headers={**owner, "Origin": "http://evil.example"}, json=INITIALIZE
        )
        assert evil.status_code == 403
        rebound = await http.post(
            server.mcp_url,
            headers={**owner, "Host": f"evil.example:{server.port}"},
            json=INITIALIZE,
        )
        assert rebound.status_code == 421
        own = await http.post(
            server.mcp_url,
            headers={**owner, "Origin": f"http://127.0.0.1:{server.port}"},
            json=INITIALIZE,
        )
        assert own.status_code == 200


async def test_allowed_hosts_and_origins_are_configurable(tmp_path: Path, codex_path: str) -> None:
    """Behind a proxy (JupyterHub): its public host and origin are added by configuration."""
    jupyter = start_jupyter(
        tmp_path,
        data_dir=tmp_path / "data",
        codex_path=codex_path,
        args=[
            "--LLMGatewayApp.allowed_hosts=hub.example:443",
            "--LLMGatewayApp.allowed_origins=https://hub.example",
        ],
    )
    try:
        owner = {"Authorization": f"Bearer {jupyter.token}", **ACCEPT}
        proxied = {**owner, "Host": "hub.example:443", "Origin": "https://hub.example"}
        async with httpx.AsyncClient(timeout=WAIT) as http:
            assert (
                await http.post(jupyter.mcp_url, headers=proxied, json=INITIALIZE)
            ).status_code == 200
            other = {**owner, "Origin": "https://other.example"}
            assert (
                await http.post(jupyter.mcp_url, headers=other, json=INITIALIZE)
            ).status_code == 403
    finally:
        jupyter.stop()


async def test_a_job_running_at_shutdown_reads_as_interrupted_after_restart(
    tmp_path: Path, model: MockResponsesServer, codex_path: str
) -> None:
    home = write_codex_home(tmp_path / "codex-home", model.base_url)
    data = tmp_path / "llmgw-data"
    first = start_jupyter(tmp_path / "first", data_dir=data, codex_path=codex_path, codex_home=home)
    try:
        async with mcp_session(first.mcp_url, first.token) as session:
            submitted = structured(
                await session.call_tool("codex_request_async", {"prompt": "long [mock:delay=60]"})
            )
            job_id = submitted["job"]["id"]
            after = 0
            while True:
                watched = structured(
                    await session.call_tool(
                        "llm_job_watch",
                        {"job_id": job_id, "after_seq": after, "timeout_seconds": 10},
                    )
                )
                after = watched["next_after_seq"]
                if any(e["type"] == "turn.started" for e in watched["events"]):
                    break
                assert not watched["done"], watched
    finally:
        assert first.stop() == 0, first.log()[-3000:]
    assert "llmgw" in first.log()

    second = start_jupyter(
        tmp_path / "second", data_dir=data, codex_path=codex_path, codex_home=home
    )
    try:
        async with mcp_session(second.mcp_url, second.token) as session:
            status = structured(await session.call_tool("llm_job_status", {"job_id": job_id}))
            assert status["job"]["status"] == "interrupted"
            result = structured(await session.call_tool("llm_job_result", {"job_id": job_id}))
            assert '"turn.started"' in result["output"]["data"]
        async with httpx.AsyncClient(
            base_url=second.url + "llmgw/api/", headers=second.auth
        ) as rest:
            job = (await rest.get(f"jobs/{job_id}")).json()
            assert job["status"] == "interrupted" and job["error"]["message"]
            output = (await rest.get(f"jobs/{job_id}/result")).json()["output"]
            assert '"thread.started"' in output["data"]
            assert (await rest.get("summary")).json()["counts"]["interrupted"] == 1
        assert job["pid"] and not _alive(job["pid"]), "the Codex worker was stopped, not orphaned"
    finally:
        second.stop()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

"""The owner's REST API under {base_url}llmgw/api/, in a pytest-jupyter server.

Jupyter's auth is on (``allow_unauthenticated_access = False``); jobs run the fake CLI behind
Codex's tools (``FakeCodexProvider``: any job will do here, so no Codex is needed; its prompt
knobs ``[fake:...]`` make jobs slow or chatty). Clients are httpx over real loopback HTTP, on the
server's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from jupyter_fixtures import *  # noqa: F403 - pytest-jupyter fixtures, see the module
from jupyter_fixtures import Served

from llmgw_jupyter.contract import JobResultOutput
from llmgw_jupyter.runtime.manager import JOB_ENV_NAMES
from llmgw_jupyter.server.auth import SERVER_TOKEN_ENV, SERVER_URL_ENV

WAIT = 30.0
ENDPOINTS: list[tuple[str, str]] = [
    ("GET", "summary"),
    ("POST", "tools/llm_job_list"),
    ("GET", "jobs"),
    ("POST", "jobs"),
    ("GET", "jobs/abc"),
    ("POST", "jobs/abc/cancel"),
    ("GET", "jobs/abc/events"),
    ("GET", "jobs/abc/result"),
    ("GET", "stream"),
    ("GET", "sessions"),
    ("GET", "approvals"),
    ("POST", "approvals/abc/approve"),
    ("POST", "approvals/abc/deny"),
    ("GET", "grants"),
    ("POST", "grants"),
    ("DELETE", "grants/abc"),
    ("GET", "audit"),
    ("GET", "policy"),
]


@pytest.fixture
async def http(llmgw: Served) -> AsyncIterator[httpx.AsyncClient]:
    """Authenticated as the owner with the Jupyter token (a header token: no XSRF cookie)."""
    async with httpx.AsyncClient(base_url=llmgw.url("llmgw/api/"), timeout=WAIT) as client:
        client.headers.update(llmgw.auth)
        yield client


def error_of(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body["error"]) == {"category", "message", "field"}, body
    assert body["error"]["message"]
    return dict(body["error"])


async def submit(http: httpx.AsyncClient, prompt: str) -> str:
    resp = await http.post("jobs", json={"prompt": prompt})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["structured"]["job"]["id"])


async def finished(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """Follow a job with the long-poll until it ends."""
    after = 0
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        resp = await http.get(f"jobs/{job_id}/events", params={"after": after, "wait": 10})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if body["events"]:
            after = body["events"][-1]["seq"]
        if body["job"]["finished_at"] is not None:
            return dict(body["job"])
    raise AssertionError(f"job {job_id} did not finish")


async def test_extension_is_loaded_with_its_settings(llmgw: Served, tmp_path: Path) -> None:
    runtime = llmgw.service.runtime
    assert runtime.data_dir == tmp_path / "llmgw-data"
    assert (runtime.data_dir / "llmgw.sqlite3").is_file()
    assert llmgw.service.mcp is not None and llmgw.service.mcp.running


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "token wrong"}, {"Authorization": "Bearer llmgw_notagrant"}],
    ids=["none", "bad-token", "grant-like"],
)
async def test_every_endpoint_refuses_unauthenticated_requests(
    llmgw: Served, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=llmgw.url("llmgw/api/"), timeout=WAIT) as anon:
        for method, path in ENDPOINTS:
            resp = await anon.request(method, path, headers=headers, json={})
            assert resp.status_code == 403, (method, path, resp.status_code, resp.text)
            assert error_of(resp)["category"] == "forbidden"
            assert "jobs" not in resp.json()
        mcp = await anon.post(llmgw.url("llmgw/mcp"), headers=headers, json={})
        assert mcp.status_code == 401
        assert mcp.headers["www-authenticate"].startswith("Bearer")


async def test_cookie_authenticated_posts_need_the_xsrf_token(llmgw: Served) -> None:
    """A browser session (cookie, no header token) gets Jupyter's XSRF rule on every POST."""
    async with httpx.AsyncClient(base_url=llmgw.url(""), timeout=WAIT) as browser:
        login = await browser.get("login", params={"token": llmgw.token}, follow_redirects=True)
        assert login.status_code == 200
        assert (await browser.get("llmgw/api/summary")).status_code == 200
        refused = await browser.post("llmgw/api/jobs", json={"prompt": "hi"})
        assert refused.status_code == 403
        xsrf = browser.cookies["_xsrf"]
        listed = await browser.post(
            "llmgw/api/tools/llm_job_list", json={}, headers={"X-XSRFToken": xsrf}
        )
        assert listed.status_code == 200, listed.text


async def test_bad_input_is_400_naming_the_field(http: httpx.AsyncClient) -> None:
    cases: list[tuple[str, str, dict[str, Any], Any, str]] = [
        ("POST", "jobs", {}, {"prompt": 5}, "prompt"),
        ("POST", "jobs", {}, {"prompt": "hi", "colour": "red"}, "colour"),
        ("POST", "tools/llm_job_status", {}, {}, "job_id"),
        (
            "POST",
            "tools/llm_job_watch",
            {},
            {"job_id": "x", "timeout_seconds": 99},
            "timeout_seconds",
        ),
        ("GET", "jobs", {"limit": "many"}, None, "limit"),
        ("GET", "jobs", {"status": "sleeping"}, None, "status"),
        ("GET", "jobs", {"offset": "-1"}, None, "offset"),
        ("GET", "approvals", {"status": "maybe"}, None, "status"),
        ("GET", "audit", {"limit": "0"}, None, "limit"),
        ("POST", "grants", {}, {"name": "ci"}, "policy"),
        ("POST", "grants", {}, {"policy": {"version": "1"}}, "name"),
        ("POST", "grants", {}, {"name": "bad name!", "policy": {"version": "1"}}, "name"),
        ("POST", "grants", {}, {"name": "ci", "policy": {"version": "2"}}, "policy"),
    ]
    for method, path, params, body, field in cases:
        resp = await http.request(method, path, params=params, json=body)
        assert resp.status_code == 400, (path, params, body, resp.text)
        error = error_of(resp)
        assert (error["category"], error["field"]) == ("invalid_input", field), (path, error)
    not_json = await http.post("jobs", content=b"{prompt", headers={"Content-Type": "text/plain"})
    assert not_json.status_code == 400 and error_of(not_json)["field"] == "body"
    not_object = await http.post("jobs", json=["hi"])
    assert not_object.status_code == 400 and error_of(not_object)["field"] == "body"


async def test_unknown_things_are_404(http: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "jobs/nope"),
        ("POST", "jobs/nope/cancel"),
        ("GET", "jobs/nope/events"),
        ("GET", "jobs/nope/result"),
        ("GET", "stream?job=nope"),
        ("POST", "tools/no_such_tool"),
        ("POST", "approvals/nope/approve"),
        ("DELETE", "grants/nope"),
    ]:
        resp = await http.request(method, path, json={})
        assert resp.status_code == 404, (method, path, resp.text)
        assert error_of(resp)["category"] == "not_found"


async def test_a_job_submitted_followed_and_collected(
    http: httpx.AsyncClient, llmgw: Served
) -> None:
    resp = await http.post("jobs", json={"prompt": "hello over REST"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["is_error"] is False
    job_id = body["structured"]["job"]["id"]
    assert body["structured"]["job"]["caller"] == "owner"

    job = await finished(http, job_id)
    assert job["status"] == "succeeded", job
    result = (await http.get(f"jobs/{job_id}/result")).json()
    assert result["final_message"] == "echo: hello over REST"
    assert result["session_id"] == job["session_id"] and result["session_id"]
    assert result["exit_code"] == 0
    assert result["usage"]["output_tokens"] is not None
    assert '"type": "session"' in result["output"]["data"] and result["output"]["eof"] is True
    page = (await http.get(f"jobs/{job_id}/result", params={"offset": 5, "limit": 10})).json()
    assert page["output"]["offset"] == 5 and len(page["output"]["data"]) <= 10

    assert (await http.get(f"jobs/{job_id}")).json()["id"] == job_id
    listed = (await http.get("jobs", params={"status": "succeeded,failed"})).json()
    assert listed["total"] == 1 and listed["jobs"][0]["id"] == job_id
    assert (await http.get("jobs", params={"status": "running"})).json()["total"] == 0
    sessions = (await http.get("sessions")).json()["sessions"]
    assert [s["session_id"] for s in sessions] == [job["session_id"]]
    summary = (await http.get("summary")).json()
    assert summary["counts"]["succeeded"] == 1
    assert summary["pending_approvals"] == 0
    assert summary["mcp_url"] == llmgw.url("llmgw/mcp")
    audit = (await http.get("audit", params={"tool": "codex_request_async"})).json()["records"]
    assert [(r["caller"], r["decision"]) for r in audit] == [("owner", "allow")]
    # The reads above passed Gateway.call as the owner: audited like the same tools over MCP.
    llmgw.service.gateway.flush_audit()
    for tool in ("llm_job_status", "llm_job_watch", "llm_job_result", "llm_job_list"):
        reads = (await http.get("audit", params={"tool": tool, "caller": "owner"})).json()
        assert {r["decision"] for r in reads["records"]} == {"allow"}, tool


async def test_the_result_is_the_same_answer_as_llm_job_result(http: httpx.AsyncClient) -> None:
    """``done`` and ``error`` as over MCP: one contract model, one tool behind both."""
    job_id = await submit(http, "hello result")
    await finished(http, job_id)
    rest = (await http.get(f"jobs/{job_id}/result", params={"limit": 100})).json()
    tool = (await http.post("tools/llm_job_result", json={"job_id": job_id, "limit": 100})).json()
    assert set(rest) == set(JobResultOutput.model_fields)
    assert (rest["done"], rest["error"]) == (True, None)
    assert rest == tool["structured"]


READS_DENIED_POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {"llm_job_result": {"action": "deny", "reason": "no raw output here"}},
}


@pytest.mark.parametrize("owner_policy", [json.dumps(READS_DENIED_POLICY)])
async def test_rest_reads_are_under_the_owner_policy(http: httpx.AsyncClient) -> None:
    job_id = await submit(http, "policy reads")
    await finished(http, job_id)
    refused = await http.get(f"jobs/{job_id}/result")
    assert refused.status_code == 403, refused.text
    assert error_of(refused)["category"] == "policy_denied"
    assert "no raw output here" in error_of(refused)["message"]
    assert (await http.get(f"jobs/{job_id}")).status_code == 200


async def test_cancel_a_running_job(http: httpx.AsyncClient) -> None:
    body = (await http.post("jobs", json={"prompt": "slow [fake:delay=60]"})).json()
    job_id = body["structured"]["job"]["id"]
    deadline = time.monotonic() + WAIT
    while (await http.get(f"jobs/{job_id}")).json()["status"] != "running":
        assert time.monotonic() < deadline
        await http.get(f"jobs/{job_id}/events", params={"after": 0, "wait": 1})
    cancelled = await http.post(f"jobs/{job_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancel_reason"] == "cancelled by owner"


async def test_running_jobs_and_agents_count_as_server_activity(
    http: httpx.AsyncClient, llmgw: Served, jp_serverapp: Any
) -> None:
    """Jupyter's idle shutdown (and JupyterHub's culler) must not stop a server at work."""
    assert not jp_serverapp.extension_manager.any_activity()
    job_id = await submit(http, "busy [fake:delay=60]")
    assert jp_serverapp.extension_manager.any_activity() is True
    assert (await http.post(f"jobs/{job_id}/cancel")).json()["status"] == "cancelled"
    assert not jp_serverapp.extension_manager.any_activity()

    assert "llmgw_last_activity" not in jp_serverapp.web_app.settings
    async with httpx.AsyncClient(timeout=WAIT) as agent:
        await agent.post(llmgw.url("llmgw/mcp"), headers=llmgw.auth, json={})
    web_app = jp_serverapp.web_app
    assert web_app.settings["llmgw_last_activity"] == web_app.last_activity()


async def test_events_long_poll_returns_as_soon_as_something_happens(
    http: httpx.AsyncClient, llmgw: Served
) -> None:
    runtime = llmgw.service.runtime
    from llmgw_jupyter.runtime import JobSpec

    held = await runtime.submit(
        JobSpec("codex", "codex_request_async", "exec", {"prompt": "x"}, hold=True)
    )
    poll = asyncio.create_task(
        http.get(f"jobs/{held.id}/events", params={"after": held.last_seq, "wait": 25})
    )
    await asyncio.sleep(0.2)  # the poll is parked (nothing to return yet)
    assert not poll.done()
    started = time.monotonic()
    await runtime.cancel(held.id, "test")
    resp = await asyncio.wait_for(poll, WAIT)
    assert time.monotonic() - started < 1.0
    body = resp.json()
    assert body["job"]["status"] == "cancelled"
    assert [e["data"].get("status") for e in body["events"]] == ["cancelled"]


async def read_sse(resp: httpx.Response, into: list[tuple[float, str, Any]]) -> None:
    kind = None
    async for line in resp.aiter_lines():
        if line.startswith(":"):
            into.append((time.time(), "comment", line[1:].strip()))
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:") and kind is not None:
            into.append((time.time(), kind, json.loads(line[5:])))


async def wait_for(predicate: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_stream_delivers_each_event_within_100_ms(
    http: httpx.AsyncClient, llmgw: Served
) -> None:
    seen: list[tuple[float, str, Any]] = []
    async with http.stream("GET", "stream") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        reader = asyncio.create_task(read_sse(resp, seen))
        await wait_for(lambda: any(k == "comment" and d == "connected" for _, k, d in seen))
        prompt = "stream me [fake:events=3,step_delay=0.3]"
        job_id = await submit(http, prompt)

        def job_done() -> bool:
            return any(k == "job" and d["finished_at"] for _, k, d in seen)

        await wait_for(job_done)
        await wait_for(lambda: any(k == "comment" and d == "heartbeat" for _, k, d in seen), 2)
        reader.cancel()
    events = [(at, data) for at, kind, data in seen if kind == "event"]
    assert {data["job_id"] for _, data in events} == {job_id}
    seqs = [data["seq"] for _, data in events]
    assert seqs == list(range(1, len(seqs) + 1)), "every event once, in order"
    types = [data["type"] for _, data in events]
    assert types.count("fake.progress") == 3 and "fake.answer" in types
    lags = [at - datetime.fromisoformat(data["ts"]).timestamp() for at, data in events]
    assert max(lags) < 0.1, lags
    statuses = [d["status"] for _, k, d in seen if k == "job"]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded"


async def test_stream_of_one_job_replays_after_seq_and_ends_with_the_server(
    http: httpx.AsyncClient, llmgw: Served
) -> None:
    job_id = await submit(http, "replay")
    await finished(http, job_id)
    seen: list[tuple[float, str, Any]] = []
    notifier = llmgw.service.runtime.notifier
    others = set(notifier._subscriptions)  # the gateway's own, if any
    async with http.stream("GET", "stream", params={"job": job_id, "after": 2}) as resp:
        reader = asyncio.create_task(read_sse(resp, seen))
        await wait_for(lambda: any(k == "job" for _, k, _ in seen))
        assert len(notifier._subscriptions - others) == 1
        await llmgw.service.stop()
        await asyncio.wait_for(reader, WAIT)  # the response ended cleanly
    seqs = [d["seq"] for _, k, d in seen if k == "event"]
    assert seqs and seqs[0] == 3 and seqs == list(range(3, 3 + len(seqs)))
    assert not notifier._subscriptions - others


async def test_a_disconnected_stream_unsubscribes(http: httpx.AsyncClient, llmgw: Served) -> None:
    notifier = llmgw.service.runtime.notifier
    others = set(notifier._subscriptions)  # the gateway's own, if any
    seen: list[tuple[float, str, Any]] = []
    async with http.stream("GET", "stream") as resp:
        reader = asyncio.create_task(read_sse(resp, seen))
        await wait_for(lambda: bool(seen))
        assert len(notifier._subscriptions - others) == 1
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.ReadError):
            await reader
    await wait_for(lambda: not notifier._subscriptions - others, 5)


async def test_grants_are_created_once_listed_and_revoked(http: httpx.AsyncClient) -> None:
    policy = {"version": "1", "default": "allow"}
    created = await http.post("grants", json={"name": "ci", "policy": policy})
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert token.startswith("llmgw_") and created.json()["name"] == "ci"
    again = await http.post("grants", json={"name": "ci", "policy": policy})
    assert again.status_code == 409 and error_of(again)["category"] == "conflict"
    listed = (await http.get("grants")).json()["grants"]
    assert [(g["name"], g["active"], g["policy"]) for g in listed] == [("ci", True, policy)]
    assert token not in json.dumps(listed)
    revoked = await http.delete("grants/ci")
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    assert (await http.get("grants")).json()["grants"][0]["revoked_at"] is not None


async def test_policy_shows_the_owner_policy(http: httpx.AsyncClient) -> None:
    body = (await http.get("policy")).json()
    assert body == {
        "owner": {
            "path": None,
            "loaded": True,
            "generation": 0,
            "policy": {"version": "1", "default": "allow"},
        },
        "last_error": None,
    }


APPROVAL_POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {"codex_request_async": {"action": "require_approval", "approval": {"timeout": 60}}},
}


@pytest.fixture
def owner_policy() -> str | None:
    """Text of the owner policy file; tests parametrize it (None: no file, allow everything)."""
    return None


@pytest.fixture
def llmgw_config(
    tmp_path: Path, llmgw_fake_config: dict[str, Any], owner_policy: str | None
) -> dict[str, Any]:
    config = dict(llmgw_fake_config)
    if owner_policy is not None:
        path = tmp_path / "owner-policy.json"
        path.write_text(owner_policy)
        config["owner_policy"] = str(path)
    return config


@pytest.mark.parametrize("owner_policy", [json.dumps(APPROVAL_POLICY)])
async def test_owner_approves_a_held_job_through_rest(http: httpx.AsyncClient) -> None:
    held = (await http.post("jobs", json={"prompt": "needs a yes"})).json()["structured"]
    job_id, approval_id = held["job"]["id"], held["approval"]["id"]
    assert held["job"]["status"] == "awaiting_approval"
    summary = (await http.get("summary")).json()
    assert summary["pending_approvals"] == 1 and summary["counts"]["awaiting_approval"] == 1
    pending = (await http.get("approvals")).json()["approvals"]
    assert [(a["id"], a["job_id"], a["status"]) for a in pending] == [
        (approval_id, job_id, "pending")
    ]
    approved = await http.post(f"approvals/{approval_id}/approve", json={"reason": "fine"})
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert (await finished(http, job_id))["status"] == "succeeded"
    assert (await http.get("approvals")).json()["approvals"] == []
    everything = (await http.get("approvals", params={"status": "all"})).json()["approvals"]
    assert [a["decided_by"] for a in everything] == ["owner"]

    second = (await http.post("jobs", json={"prompt": "no"})).json()["structured"]
    denied = await http.post(f"approvals/{second['approval']['id']}/deny")
    assert denied.json()["status"] == "denied"
    assert (await http.get(f"jobs/{second['job']['id']}")).json()["status"] == "cancelled"


@pytest.mark.parametrize("owner_policy", ['{"version": "1", "default": "perhaps"}'])
async def test_a_bad_owner_policy_fails_closed(http: httpx.AsyncClient, llmgw: Served) -> None:
    policy = (await http.get("policy")).json()
    assert policy["owner"]["loaded"] is False
    assert "owner-policy.json" in policy["last_error"] and "/default" in policy["last_error"]
    refused = await http.post("jobs", json={"prompt": "hi"})
    assert refused.status_code == 503
    assert error_of(refused)["category"] == "policy_error"
    assert (await http.get("jobs")).status_code == 200  # the owner can still look around
    async with httpx.AsyncClient(timeout=WAIT) as agent:
        mcp = await agent.post(
            llmgw.url("llmgw/mcp"),
            headers={**llmgw.auth, "Accept": "application/json, text/event-stream"},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        )
    assert mcp.status_code == 503
    assert "owner-policy.json" in mcp.json()["error"]["message"]
    assert llmgw.service.runtime.list_jobs()[1] == 0


async def test_the_kernel_token_opens_the_llmgw_api_and_nothing_else(llmgw: Served) -> None:
    service = llmgw.service
    assert os.environ[SERVER_URL_ENV] == llmgw.base_url
    assert os.environ[SERVER_TOKEN_ENV] == service.kernel_token
    # Codex jobs do not inherit it (they may run a grant's prompt): the job env is an allow list.
    assert SERVER_TOKEN_ENV not in {*JOB_ENV_NAMES, *service.runtime.config.env_passthrough}
    assert service.runtime.config.env.get(SERVER_TOKEN_ENV, "") == ""
    kernel = {"Authorization": f"token {service.kernel_token}"}
    async with httpx.AsyncClient(base_url=os.environ[SERVER_URL_ENV], timeout=WAIT) as client:
        assert (await client.get("llmgw/api/summary", headers=kernel)).status_code == 200
        listed = await client.post("llmgw/api/tools/llm_job_list", headers=kernel, json={})
        assert listed.status_code == 200, listed.text  # a POST without any XSRF cookie
        for path in ("api/kernels", "api/contents", "api/sessions", "api/terminals", "api/me"):
            resp = await client.get(path, headers=kernel)
            assert resp.status_code == 403, (path, resp.status_code)
        mcp = await client.post("llmgw/mcp", headers=kernel, json={})
        assert mcp.status_code == 401


async def test_a_kernel_started_by_the_server_reaches_the_api(
    jp_serverapp: Any, llmgw: Served
) -> None:
    """The real path: a kernel inherits the two variables and calls the REST API with them."""
    km = jp_serverapp.kernel_manager
    kernel_id = await km.start_kernel(kernel_name="python3")
    client = km.get_kernel(kernel_id).client()
    client.start_channels()
    try:
        await asyncio.wait_for(client.wait_for_ready(), WAIT)
        code = (
            "import json, os, urllib.request\n"
            "req = urllib.request.Request(os.environ['LLMGW_SERVER_URL'] + 'llmgw/api/summary',"
            " headers={'Authorization': 'token ' + os.environ['LLMGW_SERVER_TOKEN']})\n"
            "print(json.dumps(json.load(urllib.request.urlopen(req, timeout=10))))\n"
        )
        out: list[str] = []

        def on_output(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        # The kernel's HTTP request needs this loop free: the server runs on it.
        reply = await asyncio.wait_for(
            client.execute_interactive(code, output_hook=on_output, timeout=WAIT), WAIT
        )
        assert reply["content"]["status"] == "ok", "".join(out)
        summary = json.loads("".join(out))
        assert summary["counts"]["running"] == 0 and "pending_approvals" in summary
    finally:
        client.stop_channels()
        await km.shutdown_kernel(kernel_id, now=True)

"""Usage totals on ``GET summary``: tokens, cost and job counts per caller and per provider.

A real Jupyter server (pytest-jupyter, in process) with two providers: the fake CLI behind
Codex's tools and the fake provider beside it. The owner submits over REST, a grant over MCP;
each job reports the token counts its prompt asks for (``[fake:usage=IN/OUT]``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jupyter_fixtures import *  # noqa: F403 - pytest-jupyter fixtures, see the module
from jupyter_fixtures import Served, fake_codex_providers, grant_token

from llmgw_jupyter import contract
from llmgw_jupyter.server.handlers import MCP_PATH
from llmgw_jupyter.testing.mcp_agent import agent_session

WAIT = 30.0
FAKE_CLASS = "llmgw_jupyter.testing.fake_provider:FakeProvider"


@pytest.fixture
def llmgw_config(tmp_path: Path) -> dict[str, Any]:
    """Codex's tools on the fake CLI, and the fake provider's own tools next to them."""
    providers = fake_codex_providers(tmp_path / "fake-home")
    providers["fake"] = {"class": FAKE_CLASS}
    return {
        "data_dir": str(tmp_path / "llmgw-data"),
        "providers": providers,
        "heartbeat_seconds": 0.5,
    }


@pytest.fixture
async def http(llmgw: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=llmgw.url("llmgw/api/"), headers=llmgw.auth, timeout=WAIT
    ) as client:
        yield client


async def finished(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """Follow a job with the events long-poll until it ends (bounded by WAIT)."""
    after = 0
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        resp = await http.get(f"jobs/{job_id}/events", params={"after": after, "wait": 10})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if body["events"]:
            after = body["events"][-1]["seq"]
        if body["job"]["finished_at"] is not None:
            assert body["job"]["status"] == "succeeded", body["job"]
            return dict(body["job"])
    raise AssertionError(f"job {job_id} did not finish")


async def owner_tool(http: httpx.AsyncClient, tool: str, prompt: str) -> str:
    resp = await http.post(f"tools/{tool}", json={"prompt": prompt})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["structured"]["job"]["id"])


def totals_by_name(usage: dict[str, Any], view: str) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in usage[view]}


def figures(total: dict[str, Any]) -> tuple[Any, ...]:
    """jobs, tokens in, tokens out, cost, priced jobs."""
    keys = ("jobs", "input_tokens", "output_tokens", "cost_usd", "priced_jobs")
    return tuple(total[key] for key in keys)


async def test_summary_totals_usage_per_caller_and_per_provider(
    http: httpx.AsyncClient, llmgw: Served
) -> None:
    empty = (await http.get("summary")).json()
    assert empty["usage"] == {"by_caller": [], "by_provider": []}

    codex_job = await owner_tool(http, "codex_request_async", "one [fake:usage=100/10]")
    fake_job = await owner_tool(http, "fake_request_async", "two [fake:usage=7/3]")
    before_grant = time.time()
    token = await grant_token(http, "agent")
    async with agent_session(llmgw.url(MCP_PATH), token, WAIT) as agent:
        submitted = await agent.call_tool(
            "fake_request_async", {"prompt": "three [fake:usage=20/5]"}
        )
        assert submitted.is_error is False, submitted.content
        assert isinstance(submitted.structured_content, dict)
        grant_job = str(submitted.structured_content["job"]["id"])
    for job_id in (codex_job, fake_job, grant_job):
        await finished(http, job_id)

    summary = (await http.get("summary")).json()
    contract.Summary.model_validate(summary)
    by_provider = totals_by_name(summary["usage"], "by_provider")
    by_caller = totals_by_name(summary["usage"], "by_caller")
    # No job reported a cost: null, not 0 (Codex never does; the fake CLI neither).
    assert figures(by_provider["codex"]) == (1, 100, 10, None, 0)
    assert figures(by_provider["fake"]) == (2, 27, 8, None, 0)
    assert figures(by_caller["owner"]) == (2, 107, 13, None, 0)
    assert figures(by_caller["grant:agent"]) == (1, 20, 5, None, 0)
    assert [entry["name"] for entry in summary["usage"]["by_caller"]] == ["grant:agent", "owner"]

    # A cost stored as the Claude provider stores its result's total_cost_usd: summed where
    # reported, and counted, so a UI can say the cost covers 1 of 2 jobs.
    llmgw.service.runtime.store.update_job(grant_job, cost_usd=0.25)
    llmgw.service.runtime.store.update_job(fake_job, cost_usd=0.5)
    summary = (await http.get("summary")).json()
    by_provider = totals_by_name(summary["usage"], "by_provider")
    by_caller = totals_by_name(summary["usage"], "by_caller")
    assert figures(by_provider["fake"]) == (2, 27, 8, 0.75, 2)
    assert figures(by_provider["codex"]) == (1, 100, 10, None, 0)
    assert figures(by_caller["owner"]) == (2, 107, 13, 0.5, 1)
    assert figures(by_caller["grant:agent"]) == (1, 20, 5, 0.25, 1)

    # Since a time: only the jobs created from then on.
    since = llmgw.service.runtime.usage_totals(since=before_grant)
    assert [(t["name"], t["jobs"]) for t in since["by_caller"]] == [("grant:agent", 1)]
    assert [(t["name"], t["input_tokens"]) for t in since["by_provider"]] == [("fake", 20)]
    assert llmgw.service.runtime.usage_totals(since=time.time() + 60) == {
        "by_caller": [],
        "by_provider": [],
    }


async def test_the_jobs_list_filters_by_provider(http: httpx.AsyncClient) -> None:
    """What the panel's provider filter asks: through llm_job_list and the direct read."""
    codex_job = await owner_tool(http, "codex_request_async", "c")
    fake_job = await owner_tool(http, "fake_request_async", "f")
    for job_id in (codex_job, fake_job):
        await finished(http, job_id)
    for query in ({}, {"caller": "owner"}):  # the second takes the runtime's own list
        listed = (await http.get("jobs", params={"provider": "fake", **query})).json()
        assert [job["id"] for job in listed["jobs"]] == [fake_job], query
        assert listed["total"] == 1 and listed["jobs"][0]["provider"] == "fake"

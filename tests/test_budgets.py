"""Budgets through the chokepoint: a job is admitted while its budgets have room, its usage is
charged when it ends, a full budget refuses new jobs (not reads) with what was used and when it
frees up, and the charges survive a restart of the gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tools.gateway_harness import Harness, open_gateway

BUDGET = {"counter": "tok", "window": "day", "max": 100, "measure": "tokens"}


def grant_policy(*limits: dict[str, Any]) -> dict[str, Any]:
    return {"version": "1", "default": "allow", "all_tools": {"limits": list(limits)}}


async def start_job(harness: Harness, caller: Any, prompt: str) -> str:
    started = await harness.ok(
        "codex_request_async",
        {"prompt": prompt, "working_dir": str(harness.workdir)},
        caller,
    )
    job_id: str = started["job"]["id"]
    return job_id


async def test_a_grants_jobs_are_charged_and_a_full_budget_refuses_new_ones(
    tmp_path: Path,
) -> None:
    async with open_gateway(tmp_path, fake=True, grant_roots=[str(tmp_path)]) as harness:
        agent = harness.grant("agent", grant_policy(BUDGET))
        first = await start_job(harness, agent, "[fake:usage=60/30] first")
        assert (await harness.finished(first)).usage.total_tokens == 90
        # 90 of 100 used: room for one more job, which overshoots (its usage is unknown upfront).
        second = await start_job(harness, agent, "[fake:usage=20/5] second")
        await harness.finished(second)
        refused = await harness.call(
            "codex_request_async",
            {"prompt": "third", "working_dir": str(harness.workdir)},
            agent,
        )
        assert refused.is_error and refused.error == "rate_limited"  # with retry_after_seconds
        assert "budget exhausted: tok: at most 100 tokens per day per caller" in refused.text
        assert "used 115 tokens of 100 tokens" in refused.text
        assert "retry_after_seconds" in refused.text
        # Reading what the jobs did is never refused by a budget.
        status = await harness.ok("llm_job_status", {"job_id": second}, agent)
        assert status["job"]["usage"]["output_tokens"] == 5
        # The owner and other grants have budgets of their own.
        other = harness.grant("other", grant_policy(BUDGET))
        await start_job(harness, other, "[fake:usage=1/1] fine")


async def test_charges_survive_a_restart(tmp_path: Path) -> None:
    async with open_gateway(tmp_path, fake=True, grant_roots=[str(tmp_path)]) as harness:
        agent = harness.grant("agent", grant_policy(BUDGET))
        job = await start_job(harness, agent, "[fake:usage=80/40] big")
        await harness.finished(job)
        token = harness.grants["agent"]
    async with open_gateway(tmp_path, fake=True, grant_roots=[str(tmp_path)]) as harness:
        caller = harness.gateway.caller_for_token(token)
        assert caller is not None
        refused = await harness.call(
            "codex_request_async",
            {"prompt": "again", "working_dir": str(harness.workdir)},
            caller,
        )
        assert refused.is_error and "used 120 tokens of 100 tokens" in refused.text


async def test_a_budget_in_a_tools_own_limits_applies_to_that_tool_only(tmp_path: Path) -> None:
    policy = {
        "version": "1",
        "default": "allow",
        "tools": {"codex_fork_session": {"limits": [{**BUDGET, "max": 1}]}},
    }
    async with open_gateway(tmp_path, fake=True, grant_roots=[str(tmp_path)]) as harness:
        agent = harness.grant("agent", policy)
        job = await start_job(harness, agent, "[fake:usage=50/50] not a fork")
        await harness.finished(job)
        await start_job(harness, agent, "[fake:usage=50/50] still not a fork")

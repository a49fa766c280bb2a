"""Revocation is immediate and complete: a revoked grant's awaiting, queued and running jobs are
cancelled (reason ``grant_revoked``), its pending approvals denied and never approvable, its
listeners told, and an in-flight call gets a ``grant_revoked`` error instead of its result. The
same when ``llmgw grant revoke`` runs in another process on the same store.

Jobs run on the fake Codex (a prompt with ``[fake:hang]`` runs until cancelled): what is tested is
the gateway's bookkeeping, not the model.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tools.gateway_harness import WAIT, Harness, eventually, open_gateway, pending_approval

from llmgw_jupyter.errors import GatewayError
from llmgw_jupyter.runtime import JobRecord
from llmgw_jupyter.tools import Caller

HANG = "[fake:hang] work until stopped"
# Submitting and reading are allowed; forks need the owner's approval (a held job).
POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "tools": {"codex_fork_session": {"action": "require_approval", "approval": {"timeout": "1h"}}},
}
NEVER = 3600.0  # a watcher interval that never comes within a test: only wake-ups count


@pytest.fixture
async def serving(tmp_path: Path) -> AsyncIterator[Harness]:
    """A fake-Codex gateway running one job at a time (so the second job stays queued)."""
    async with open_gateway(
        tmp_path, fake=True, max_running=1, gateway_options={"revocation_check_seconds": NEVER}
    ) as harness:
        yield harness


def revoke_in_another_process(harness: Harness, name: str) -> None:
    """``llmgw grant revoke`` as its own process, writing the gateway's store."""
    env = {k: v for k, v in os.environ.items() if k != "LLMGW_DATA_DIR"}
    data_dir = str(harness.tmp / "data")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmgw_jupyter.cli",
            "grant",
            "--data-dir",
            data_dir,
            "revoke",
            name,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def revoke(harness: Harness, name: str) -> list[str]:
    """Revoke in this process and wait until its jobs, approvals and listeners are done."""
    work = harness.gateway.revoke_grant(name)
    assert work is not None
    return await work


async def running(harness: Harness, job_id: str) -> JobRecord:
    return await eventually(
        lambda: (
            (r := harness.runtime.get(job_id)) is not None and r.status.value == "running" and r
        ),
        f"job {job_id} running",
    )


async def grant_with_work(harness: Harness) -> tuple[Caller, dict[str, str]]:
    """A grant with a running job, a queued one and a fork held for approval."""
    agent = harness.grant("agent", POLICY)
    first = await harness.ok("codex_request_async", {"prompt": HANG}, agent)
    await running(harness, first["job"]["id"])
    await eventually(
        lambda: harness.runtime.get(first["job"]["id"]).session_id,  # type: ignore[union-attr]
        "the running job's session",
    )
    second = await harness.ok("codex_request_async", {"prompt": HANG + " too"}, agent)
    held = await harness.ok("codex_fork_session", {"prompt": HANG, "last": True}, agent)
    jobs = {
        "running": first["job"]["id"],
        "queued": second["job"]["id"],
        "awaiting_approval": held["job"]["id"],
    }
    for status, job_id in jobs.items():
        record = harness.runtime.get(job_id)
        assert record is not None and record.status.value == status
    jobs["approval"] = held["approval"]["id"]
    return agent, jobs


def assert_all_revoked(harness: Harness, jobs: dict[str, str]) -> None:
    for status in ("running", "queued", "awaiting_approval"):
        record = harness.runtime.get(jobs[status])
        assert record is not None
        assert (record.status.value, record.cancel_reason) == ("cancelled", "grant_revoked"), status
    approval = harness.gateway.store.get_approval(jobs["approval"])
    assert approval is not None
    assert (approval.status, approval.decided_by, approval.reason) == (
        "denied",
        "system",
        "grant revoked",
    )


async def test_revoking_cancels_jobs_denies_approvals_and_tells_listeners(
    serving: Harness,
) -> None:
    _, jobs = await grant_with_work(serving)
    told_sync: list[str] = []
    told_async: list[str] = []

    async def close_sessions(name: str) -> None:
        told_async.append(name)

    def broken(name: str) -> None:
        raise RuntimeError("a broken listener does not stop the others")

    serving.gateway.add_revocation_listener(broken)
    serving.gateway.add_revocation_listener(told_sync.append)
    serving.gateway.add_revocation_listener(close_sessions)

    assert await revoke(serving, "agent") == ["agent"]
    assert_all_revoked(serving, jobs)
    assert told_sync == told_async == ["agent"]
    assert serving.gateway.caller_for_token(serving.grants["agent"]) is None

    # Approving the denied request afterwards is a clear error; the job stays cancelled.
    with pytest.raises(GatewayError) as refused:
        await serving.gateway.decide_approval(jobs["approval"], True)
    assert refused.value.category.value == "conflict"
    assert "grant 'agent' is revoked" in refused.value.message
    record = serving.runtime.get(jobs["awaiting_approval"])
    assert record is not None and record.status.value == "cancelled"
    assert await serving.gateway.enforce_revocations() == []  # dealt with once


async def test_a_revocation_by_the_command_in_another_process_is_enforced(
    tmp_path: Path,
) -> None:
    """The watcher wakes every ``revocation_check_seconds`` and compares the revoked set."""
    async with open_gateway(
        tmp_path, fake=True, max_running=1, gateway_options={"revocation_check_seconds": 0.2}
    ) as serving:
        _, jobs = await grant_with_work(serving)
        told = asyncio.Event()
        serving.gateway.add_revocation_listener(lambda name: told.set())
        revoke_in_another_process(serving, "agent")
        await asyncio.wait_for(told.wait(), WAIT)
        assert_all_revoked(serving, jobs)


async def test_an_approval_of_a_grant_revoked_elsewhere_cannot_be_approved(
    serving: Harness,
) -> None:
    """Even before the watcher looks (its interval never comes here), approving is refused."""
    _, jobs = await grant_with_work(serving)
    revoke_in_another_process(serving, "agent")
    with pytest.raises(GatewayError) as refused:
        await serving.gateway.decide_approval(jobs["approval"], True)
    assert refused.value.category.value == "conflict"
    record = serving.runtime.get(jobs["awaiting_approval"])
    assert record is not None
    assert (record.status.value, record.cancel_reason) == ("cancelled", "grant_revoked")
    approval = serving.gateway.store.get_approval(jobs["approval"])
    assert approval is not None and approval.status == "denied"


async def waiting_codex_request(serving: Harness, agent: Caller) -> tuple[asyncio.Task[Any], Any]:
    """A grant's ``codex_request`` waiting on its running job: the call's task and the job."""
    call = asyncio.create_task(
        serving.call("codex_request", {"prompt": HANG, "wait_seconds": WAIT}, agent)
    )
    job = await eventually(
        lambda: next(iter(serving.runtime.list_jobs(caller=agent.key)[0]), None), "the job"
    )
    await running(serving, job.id)
    return call, job


async def test_an_in_flight_call_of_a_revoked_grant_gets_an_error_not_its_result(
    serving: Harness,
) -> None:
    agent = serving.grant("agent", POLICY)
    call, job = await waiting_codex_request(serving, agent)
    serving.gateway.revoke_grant("agent")
    result = await asyncio.wait_for(call, WAIT)
    assert result.is_error and result.error == "grant_revoked"
    assert result.structured["error"]["category"] == "grant_revoked"
    assert "final_message" not in result.structured and "job" not in result.structured
    record = await serving.finished(job.id)
    assert (record.status.value, record.cancel_reason) == ("cancelled", "grant_revoked")
    decisions = [r.decision for r in serving.gateway.store.query_audit(caller=agent.key)]
    assert decisions[0] == "grant_revoked"


async def test_a_revoked_call_leaves_its_task_usable_and_a_caller_giving_up_wins(
    serving: Harness,
) -> None:
    """The guarded call runs in the caller's own task: a revocation's cancellation is taken
    back once handled (the task awaits on normally), and a caller that cancels the same call
    as well still gets its cancellation."""
    agent = serving.grant("agent", POLICY)

    async def call_then_await() -> tuple[Any, int]:
        result = await serving.call("codex_request", {"prompt": HANG, "wait_seconds": WAIT}, agent)
        await asyncio.sleep(0)  # a leftover cancellation would be raised here
        task = asyncio.current_task()
        assert task is not None
        return result, task.cancelling()

    call = asyncio.create_task(call_then_await())
    job = await eventually(
        lambda: next(iter(serving.runtime.list_jobs(caller=agent.key)[0]), None), "the job"
    )
    await running(serving, job.id)
    serving.gateway.revoke_grant("agent")
    result, cancelling = await asyncio.wait_for(call, WAIT)
    assert result.error == "grant_revoked" and cancelling == 0

    other = serving.grant("other", POLICY)
    given_up = asyncio.create_task(
        serving.call("codex_request", {"prompt": HANG, "wait_seconds": WAIT}, other)
    )
    job = await eventually(
        lambda: next(iter(serving.runtime.list_jobs(caller=other.key)[0]), None), "the job"
    )
    await running(serving, job.id)
    serving.gateway.revoke_grant("other")
    given_up.cancel()  # in the same loop step as the revocation's own cancellation
    with pytest.raises(asyncio.CancelledError):
        await given_up


async def test_a_call_returning_after_a_revocation_elsewhere_is_withheld(
    serving: Harness,
) -> None:
    """Revoked by another process while a codex_request waits; the job then ends (the owner
    cancels it) before the watcher looked: the answer is still withheld."""
    agent = serving.grant("agent", POLICY)
    call, job = await waiting_codex_request(serving, agent)
    revoke_in_another_process(serving, "agent")
    await serving.runtime.cancel(job.id, "cancelled by owner")
    result = await asyncio.wait_for(call, WAIT)
    assert result.error == "grant_revoked", result.text


async def test_a_revoked_grant_starts_nothing_afterwards(serving: Harness) -> None:
    """Its held fork never starts, and a caller resolved before the revocation is refused."""
    agent, jobs = await grant_with_work(serving)
    approval = await pending_approval(serving.gateway, "codex_fork_session")
    assert approval.id == jobs["approval"]
    await revoke(serving, "agent")
    refused = await serving.call("codex_request_async", {"prompt": "late"}, agent)
    assert refused.error == "policy_denied"  # a revoked grant has no policy
    live, _ = serving.runtime.list_jobs(
        caller=agent.key, status=["awaiting_approval", "queued", "running"]
    )
    assert live == []


async def test_the_owner_is_untouched_by_a_grants_revocation(serving: Harness) -> None:
    await grant_with_work(serving)
    owners = await serving.ok("codex_request_async", {"prompt": "the owner's"})
    await revoke(serving, "agent")
    record = await serving.finished(owners["job"]["id"])
    assert record.status.value == "succeeded"

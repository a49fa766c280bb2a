"""The chokepoint: every call goes validate -> policy -> approval -> handler -> audit.

What callers see of policy decisions (denials, rate limits, hidden tools, approvals), the isolation
of grants from each other and from the owner, and the audit trail. The policy engine itself
(operators, validation, limiter edges, reload) is specified in tests/policy/.

Main flows run the real Codex CLI against the mock model; the fake Codex (instant or hanging) is
used for many quick jobs and for jobs that must stay running.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from tools.gateway_harness import (
    MINIMAL_ARGUMENTS,
    OWNER,
    WAIT,
    Harness,
    eventually,
    open_gateway,
    pending_approval,
)

from llmgw_jupyter.errors import GatewayError
from llmgw_jupyter.gateway import ToolResult
from llmgw_jupyter.store.approvals import ApprovalRecord
from llmgw_jupyter.testing.mock_responses import MockResponsesServer
from llmgw_jupyter.tools import REGISTRY, TOOL_NAMES, Caller

# PolicyLayer's published policy for codex_request_async, loaded unchanged.
POLICYLAYER_ASYNC: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {
        "codex_request_async": {
            "limits": [
                {
                    "counter": "codex_request_async_rate",
                    "window": "minute",
                    "max": 10,
                    "scope": "grant",
                }
            ]
        }
    },
}
ALLOW_ALL: dict[str, Any] = {"version": "1", "default": "allow"}


@pytest.fixture
async def gateway(tmp_path: Path, codex_path: str, codex_home: Path) -> AsyncIterator[Harness]:
    async with open_gateway(tmp_path, codex_path=codex_path, codex_home=codex_home) as harness:
        yield harness


@pytest.fixture
async def fake_gateway(tmp_path: Path) -> AsyncIterator[Harness]:
    async with open_gateway(tmp_path, fake=True) as harness:
        yield harness


def assert_denied(
    result: ToolResult, reason: str, rule: str, category: str = "policy_denied"
) -> None:
    """A denial: isError, text ``[POLICY DENIED] <reason> (rule: <pointer>)``, same fields
    in the structured content."""
    assert result.is_error
    assert result.error == category
    assert result.text.startswith(f"[POLICY DENIED] {reason} (rule: {rule})"), result.text
    assert result.structured is not None
    assert result.structured["decision"] == "deny"
    assert result.structured["reason"] == reason
    assert result.structured["rule"] == (rule if rule != "<no policy>" else "")
    assert result.structured["error"] == {"category": category, "message": reason, "field": None}


def names(harness: Harness, caller: Caller) -> list[str]:
    return [tool.name for tool in harness.gateway.list_tools(caller)]


async def submit(harness: Harness, caller: Caller, prompt: str, **arguments: Any) -> str:
    out = await harness.ok("codex_request_async", {"prompt": prompt, **arguments}, caller)
    job_id: str = out["job"]["id"]
    return job_id


# -- the PolicyLayer policy ---------------------------------------------------------------------
async def test_the_policylayer_async_policy_loads_unchanged_and_refuses_every_other_tool(
    fake_gateway: Harness,
) -> None:
    agent = fake_gateway.grant("policylayer", copy.deepcopy(POLICYLAYER_ASYNC))
    assert fake_gateway.gateway.store.get_grant("policylayer").policy == POLICYLAYER_ASYNC  # type: ignore[union-attr]
    assert names(fake_gateway, agent) == ["codex_request_async"]
    for tool in TOOL_NAMES:
        if tool == "codex_request_async":
            continue
        result = await fake_gateway.call(tool, MINIMAL_ARGUMENTS[tool], agent)
        assert_denied(
            result, f"tool {tool} is not allowed by the policy (default: deny)", "/default"
        )
    _, total = fake_gateway.runtime.list_jobs()
    assert total == 0


async def test_the_policylayer_async_policy_admits_ten_calls_a_minute_per_grant(
    fake_gateway: Harness,
) -> None:
    """Ten admitted, the eleventh refused with the time to wait; another grant counts apart."""
    agent = fake_gateway.grant("policylayer", copy.deepcopy(POLICYLAYER_ASYNC))
    other = fake_gateway.grant("other", copy.deepcopy(POLICYLAYER_ASYNC))
    for n in range(10):
        await submit(fake_gateway, agent, f"call {n}")
    result = await fake_gateway.call("codex_request_async", {"prompt": "call 10"}, agent)
    assert result.structured is not None
    reason = result.structured["reason"]
    assert reason.startswith("rate limit exceeded: ")
    assert "codex_request_async_rate" in reason
    assert_denied(result, reason, "/tools/codex_request_async/limits/0", "rate_limited")
    retry = result.structured["retry_after_seconds"]
    assert 30 < retry <= 60  # the oldest of the ten hits is seconds old
    assert result.text.endswith(f"; retry_after_seconds: {retry:.3f}")
    _, total = fake_gateway.runtime.list_jobs(caller="grant:policylayer")
    assert total == 10

    await submit(fake_gateway, other, "the other grant's first call")
    owner = await fake_gateway.call("codex_request_async", {"prompt": "owner"}, OWNER)
    assert not owner.is_error  # the owner follows the owner policy (allow everything)


async def test_the_same_form_for_codex_fork_session_admits_ten_forks(
    fake_gateway: Harness,
) -> None:
    policy = copy.deepcopy(POLICYLAYER_ASYNC)
    policy["tools"] = {"codex_fork_session": policy["tools"].pop("codex_request_async")}
    agent = fake_gateway.grant("forker", ALLOW_ALL)
    await submit(fake_gateway, agent, "a session of its own")  # while it may still start one
    (job,), _ = fake_gateway.runtime.list_jobs(caller=agent.key)
    await fake_gateway.finished(job.id)
    assert fake_gateway.gateway.store.set_grant_policy("forker", policy)

    assert names(fake_gateway, agent) == ["codex_fork_session"]
    refused = await fake_gateway.call("codex_request_async", {"prompt": "x"}, agent)
    assert_denied(
        refused, "tool codex_request_async is not allowed by the policy (default: deny)", "/default"
    )
    for n in range(10):
        out = await fake_gateway.ok(
            "codex_fork_session", {"prompt": f"fork {n}", "last": True}, agent
        )
        await fake_gateway.finished(out["job"]["id"])
    result = await fake_gateway.call(
        "codex_fork_session", {"prompt": "fork 10", "last": True}, agent
    )
    assert result.error == "rate_limited"
    assert result.text.startswith("[POLICY DENIED] rate limit exceeded")
    assert "(rule: /tools/codex_fork_session/limits/0)" in result.text


# -- what a caller sees ---------------------------------------------------------------------------
async def test_hidden_and_denied_tools_are_left_out_of_the_list_and_refused(
    fake_gateway: Harness,
) -> None:
    agent = fake_gateway.grant(
        "agent",
        {
            "version": "1",
            "default": "allow",
            "hide": ["llm_session_list"],
            "tools": {
                "codex_request": {"action": "deny", "reason": "use the async tool"},
                "codex_fork_session": {"action": "require_approval"},
            },
        },
    )
    visible = names(fake_gateway, agent)
    assert visible == [t for t in TOOL_NAMES if t not in ("llm_session_list", "codex_request")]
    assert "codex_fork_session" in visible  # approval needed is not "never allowed"
    assert_denied(
        await fake_gateway.call("llm_session_list", {}, agent),
        "tool llm_session_list is hidden by the policy",
        "/hide/0",
    )
    assert_denied(
        await fake_gateway.call("codex_request", {"prompt": "x"}, agent),
        "use the async tool",
        "/tools/codex_request/action",
    )
    assert names(fake_gateway, OWNER) == list(TOOL_NAMES)


async def test_hiding_everything_leaves_no_tool(fake_gateway: Harness) -> None:
    agent = fake_gateway.grant("hidden", {"version": "1", "default": "allow", "hide": ["*"]})
    assert names(fake_gateway, agent) == []
    result = await fake_gateway.call("llm_job_list", {}, agent)
    assert_denied(result, "tool llm_job_list is hidden by the policy", "/hide/0")


async def test_under_default_deny_an_empty_rule_allows_a_tool(fake_gateway: Harness) -> None:
    agent = fake_gateway.grant(
        "lister", {"version": "1", "default": "deny", "tools": {"llm_job_list": {}}}
    )
    assert names(fake_gateway, agent) == ["llm_job_list"]
    listed = await fake_gateway.ok("llm_job_list", {}, agent)
    assert listed["total"] == 0


async def test_a_grant_with_no_policy_is_refused_everything(fake_gateway: Harness) -> None:
    bare = fake_gateway.grant("bare", None)
    assert names(fake_gateway, bare) == []
    for tool in TOOL_NAMES:
        result = await fake_gateway.call(tool, MINIMAL_ARGUMENTS[tool], bare)
        assert_denied(result, "no policy for this caller: every tool is refused", "<no policy>")


async def test_an_unknown_grant_is_refused_everything(fake_gateway: Harness) -> None:
    ghost = Caller.grant("ghost")
    assert names(fake_gateway, ghost) == []
    result = await fake_gateway.call("llm_job_list", {}, ghost)
    assert_denied(result, "no policy for this caller: every tool is refused", "<no policy>")


async def test_invalid_arguments_are_refused_before_the_policy_is_asked(
    fake_gateway: Harness,
) -> None:
    """Validation comes first: a bad call neither learns the policy nor spends the tool's own
    limit (it counts toward all_tools limits only: tests/test_failed_calls.py)."""
    agent = fake_gateway.grant("agent", POLICYLAYER_ASYNC)
    bad = await fake_gateway.call("codex_request_async", {"prompt": ""}, agent)
    assert bad.error == "invalid_input"
    bad_denied_tool = await fake_gateway.call("llm_job_list", {"limit": -1}, agent)
    assert bad_denied_tool.error == "invalid_input"
    for n in range(10):
        await submit(fake_gateway, agent, f"call {n}")


# -- reservations given back ----------------------------------------------------------------------
async def test_a_call_refused_later_in_the_chain_gives_its_rate_limit_back(
    fake_gateway: Harness,
) -> None:
    one_a_minute = [{"counter": "c", "window": "minute", "max": 1}]
    agent = fake_gateway.grant(
        "agent",
        {
            "version": "1",
            "default": "deny",
            "tools": {
                "llm_job_status": {"limits": one_a_minute},
                "codex_request_async": {"limits": [{**one_a_minute[0], "counter": "submit"}]},
            },
        },
    )
    for _ in range(3):  # handler errors: unknown job
        missing = await fake_gateway.call("llm_job_status", {"job_id": "nosuchjob"}, agent)
        assert missing.error == "not_found"
    for arguments in (
        {"prompt": "x", "session_id": "no-such-session"},  # handler error: unknown session
        {"prompt": "x", "working_dir": str(fake_gateway.tmp / "missing")},  # runtime refusal
    ):
        refused = await fake_gateway.call("codex_request_async", arguments, agent)
        assert refused.error in ("not_found", "invalid_input"), refused.text

    job_id = await submit(fake_gateway, agent, "admitted")  # the one submission of the minute
    limited = await fake_gateway.call("codex_request_async", {"prompt": "again"}, agent)
    assert limited.error == "rate_limited"
    await fake_gateway.ok("llm_job_status", {"job_id": job_id}, agent)
    limited = await fake_gateway.call("llm_job_status", {"job_id": job_id}, agent)
    assert limited.error == "rate_limited"


async def test_a_denied_approval_gives_its_rate_limit_back_and_an_approved_one_keeps_it(
    fake_gateway: Harness,
) -> None:
    agent = fake_gateway.grant(
        "agent",
        {
            "version": "1",
            "default": "deny",
            "tools": {
                "codex_request_async": {
                    "action": "require_approval",
                    "limits": [{"counter": "c", "window": "minute", "max": 1}],
                }
            },
        },
    )
    first = await fake_gateway.ok("codex_request_async", {"prompt": "one"}, agent)
    await fake_gateway.gateway.decide_approval(first["approval"]["id"], False)
    second = await fake_gateway.ok("codex_request_async", {"prompt": "two"}, agent)
    await fake_gateway.gateway.decide_approval(second["approval"]["id"], True)
    assert (await fake_gateway.finished(second["job"]["id"])).status.value == "succeeded"
    third = await fake_gateway.call("codex_request_async", {"prompt": "three"}, agent)
    assert third.error == "rate_limited"


# -- approvals: jobs ----------------------------------------------------------------------------
def approval_policy(tool: str, timeout: Any = "1m") -> dict[str, Any]:
    """``tool`` needs approval; submitting and reading job status are allowed."""
    tools: dict[str, Any] = {"llm_job_status": {}, "codex_request_async": {}}
    tools[tool] = {"action": "require_approval", "approval": {"timeout": timeout}}
    return {"version": "1", "default": "deny", "tools": tools}


async def test_an_async_job_under_approval_waits_then_runs_when_approved(
    gateway: Harness, mock_model: MockResponsesServer
) -> None:
    agent = gateway.grant("agent", approval_policy("codex_request_async"))
    prompt = "Approve me, please."
    started = time.monotonic()
    out = await gateway.ok(
        "codex_request_async", {"prompt": prompt, "working_dir": str(gateway.workdir)}, agent
    )
    assert time.monotonic() - started < 5.0  # the id comes back at once
    job, approval = out["job"], out["approval"]
    assert job["status"] == "awaiting_approval"
    assert approval["status"] == "pending"
    assert approval["job_id"] == job["id"]
    assert approval["caller"] == "grant:agent"
    assert approval["tool"] == "codex_request_async"
    assert approval["arguments"]["prompt"] == prompt  # the approver reads the full arguments
    assert approval["arguments"]["working_dir"] == str(gateway.workdir)
    assert approval["created_at"] < approval["expires_at"]
    assert f"approval {approval['id']}" in out["message"]
    assert "waits for the owner's approval" in out["message"]
    assert "expires in 1 min (at " in out["message"]  # the UI's words, not a raw timestamp

    (listed,) = gateway.gateway.approvals()
    assert listed.id == approval["id"]
    assert 59 <= listed.expires_at - listed.created_at <= 61
    status = await gateway.ok("llm_job_status", {"job_id": job["id"]}, agent)
    assert status["job"]["status"] == "awaiting_approval"
    assert mock_model.requests == []  # nothing ran

    decided = await gateway.gateway.decide_approval(approval["id"], True, decided_by="owner")
    assert decided.status == "approved"
    assert decided.decided_by == "owner"
    assert decided.decided_at is not None
    done = await gateway.finished(job["id"])
    assert done.status.value == "succeeded", done.error_message
    assert done.final_message == f"echo: {prompt}"
    assert gateway.gateway.approvals() == []
    again = await gateway.gateway.decide_approval(approval["id"], False)  # already decided
    assert again.status == "approved"


async def test_an_async_job_under_approval_is_cancelled_when_denied(
    gateway: Harness, mock_model: MockResponsesServer
) -> None:
    agent = gateway.grant("agent", approval_policy("codex_request_async"))
    out = await gateway.ok("codex_request_async", {"prompt": "Deny me."}, agent)
    decided = await gateway.gateway.decide_approval(
        out["approval"]["id"], False, decided_by="alice", reason="not today"
    )
    assert (decided.status, decided.decided_by, decided.reason) == ("denied", "alice", "not today")
    done = await gateway.finished(out["job"]["id"])
    assert done.status.value == "cancelled"
    assert done.cancel_reason == "approval_denied"
    assert done.started_at is None
    assert mock_model.requests == []


async def test_an_async_job_under_approval_is_cancelled_when_the_approval_expires(
    gateway: Harness,
) -> None:
    agent = gateway.grant("agent", approval_policy("codex_request_async", "1s"))
    out = await gateway.ok("codex_request_async", {"prompt": "Forget me."}, agent)
    done = await gateway.finished(out["job"]["id"], timeout=10)  # woken by the job's end
    assert done.status.value == "cancelled"
    assert done.cancel_reason == "approval_expired"
    (expired,) = gateway.gateway.approvals(status="expired")
    assert expired.id == out["approval"]["id"]
    assert done.finished_at is not None
    late = done.finished_at - expired.expires_at
    assert -0.01 < late < 0.5, f"expiry applied {late:.3f} s late: polled, not woken"
    after = await gateway.gateway.decide_approval(expired.id, True)  # too late to start work
    assert after.status == "expired"
    record = gateway.runtime.get(out["job"]["id"])
    assert record is not None and record.status.value == "cancelled"


async def test_a_fork_under_approval_is_held_like_an_async_job(fake_gateway: Harness) -> None:
    agent = fake_gateway.grant("agent", approval_policy("codex_fork_session"))
    job_id = await submit(fake_gateway, agent, "parent")
    parent = (await fake_gateway.finished(job_id)).session_id
    out = await fake_gateway.ok(
        "codex_fork_session", {"prompt": "child", "session_id": parent}, agent
    )
    assert out["job"]["status"] == "awaiting_approval"
    assert out["approval"]["tool"] == "codex_fork_session"
    await fake_gateway.gateway.decide_approval(out["approval"]["id"], True)
    done = await fake_gateway.finished(out["job"]["id"])
    assert done.status.value == "succeeded"
    assert done.parent_session_id == parent


async def test_a_held_job_cancelled_by_its_caller_stays_cancelled_if_approved_later(
    fake_gateway: Harness,
) -> None:
    agent = fake_gateway.grant(
        "agent", {**approval_policy("codex_request_async"), "default": "allow"}
    )
    out = await fake_gateway.ok("codex_request_async", {"prompt": "held"}, agent)
    cancelled = await fake_gateway.ok("llm_job_cancel", {"job_id": out["job"]["id"]}, agent)
    assert cancelled["job"]["status"] == "cancelled"
    await fake_gateway.gateway.decide_approval(out["approval"]["id"], True)
    record = fake_gateway.runtime.get(out["job"]["id"])
    assert record is not None and record.status.value == "cancelled"


async def test_a_held_job_cancelled_by_its_caller_closes_its_approval_and_frees_its_slot(
    fake_gateway: Harness,
) -> None:
    policy = approval_policy("codex_request_async")
    policy["tools"]["codex_request_async"]["limits"] = [
        {"counter": "held", "window": "hour", "max": 1, "scope": "grant"}
    ]
    policy["tools"]["llm_job_cancel"] = {}
    agent = fake_gateway.grant("agent", policy)
    out = await fake_gateway.ok("codex_request_async", {"prompt": "held"}, agent)
    approval_id = out["approval"]["id"]
    await fake_gateway.ok("llm_job_cancel", {"job_id": out["job"]["id"]}, agent)

    def decided() -> ApprovalRecord | None:
        record = fake_gateway.gateway.store.get_approval(approval_id)
        return record if record is not None and record.status != "pending" else None

    record = await eventually(decided, "the approval of the cancelled job closed")
    assert record.status == "denied" and record.decided_by == "system"
    assert fake_gateway.gateway.approvals("pending") == []
    again = await fake_gateway.ok("codex_request_async", {"prompt": "held again"}, agent)
    assert again["job"]["status"] == "awaiting_approval"


# -- approvals: synchronous tools -----------------------------------------------------------------
async def test_a_sync_codex_request_under_approval_waits_and_runs_when_approved(
    gateway: Harness, mock_model: MockResponsesServer
) -> None:
    agent = gateway.grant("agent", approval_policy("codex_request"))
    call = asyncio.create_task(
        gateway.call(
            "codex_request",
            {"prompt": "Sync, approved.", "working_dir": str(gateway.workdir)},
            agent,
        )
    )
    approval = await pending_approval(gateway.gateway, "codex_request")
    assert approval.job_id is None
    assert approval.caller == "grant:agent"
    assert approval.arguments["prompt"] == "Sync, approved."
    assert not call.done()
    assert gateway.runtime.list_jobs()[1] == 0 and mock_model.requests == []
    await gateway.gateway.decide_approval(approval.id, True)
    result = await asyncio.wait_for(call, WAIT)
    assert not result.is_error, result.text
    assert result.structured is not None
    assert result.structured["done"] is True
    assert result.structured["final_message"] == "echo: Sync, approved."


async def test_a_sync_tool_under_approval_waits_and_completes_when_approved(
    fake_gateway: Harness,
) -> None:
    agent = fake_gateway.grant("agent", approval_policy("llm_job_list"))
    call = asyncio.create_task(fake_gateway.call("llm_job_list", {}, agent))
    approval = await pending_approval(fake_gateway.gateway, "llm_job_list")
    assert not call.done()
    await fake_gateway.gateway.decide_approval(approval.id, True)
    result = await asyncio.wait_for(call, WAIT)
    assert not result.is_error, result.text
    assert result.structured == {"jobs": [], "total": 0, "limit": 20, "offset": 0}


async def test_a_sync_tool_under_approval_is_refused_when_denied(fake_gateway: Harness) -> None:
    agent = fake_gateway.grant("agent", approval_policy("llm_job_list"))
    call = asyncio.create_task(fake_gateway.call("llm_job_list", {}, agent))
    approval = await pending_approval(fake_gateway.gateway, "llm_job_list")
    await fake_gateway.gateway.decide_approval(approval.id, False)
    result = await asyncio.wait_for(call, WAIT)
    assert_denied(
        result,
        f"approval denied ({approval.id})",
        "/tools/llm_job_list/action",
        "approval_denied",
    )


async def test_a_sync_tool_under_approval_is_refused_when_the_approval_expires(
    fake_gateway: Harness,
) -> None:
    agent = fake_gateway.grant("agent", approval_policy("llm_job_list", 0.5))
    started = time.monotonic()
    result = await asyncio.wait_for(fake_gateway.call("llm_job_list", {}, agent), WAIT)
    waited = time.monotonic() - started
    assert 0.45 <= waited < 5.0
    (expired,) = fake_gateway.gateway.approvals(status="expired")
    assert_denied(
        result,
        f"approval expired ({expired.id})",
        "/tools/llm_job_list/action",
        "approval_expired",
    )


async def test_a_sync_caller_that_stops_waiting_withdraws_its_approval(
    fake_gateway: Harness,
) -> None:
    agent = fake_gateway.grant("agent", approval_policy("llm_job_list"))
    call = asyncio.create_task(fake_gateway.call("llm_job_list", {}, agent))
    approval = await pending_approval(fake_gateway.gateway, "llm_job_list")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    (withdrawn,) = fake_gateway.gateway.approvals(status=None)
    assert withdrawn.id == approval.id
    assert (withdrawn.status, withdrawn.decided_by) == ("denied", "system")


async def test_approvals_are_decided_only_through_the_gateway_api(fake_gateway: Harness) -> None:
    """No tool exposes approvals: a grant cannot approve its own request."""
    for tool in REGISTRY.values():
        assert "approv" not in tool.name
        assert not any("approv" in field for field in tool.input_schema["properties"])
    agent = fake_gateway.grant("agent", {"version": "1", "default": "allow"})
    for name in ("approve", "llm_approval_decide", "decide_approval"):
        result = await fake_gateway.call(name, {"approval_id": "apr_x"}, agent)
        assert result.error == "not_found"
    with pytest.raises(GatewayError) as unknown:
        await fake_gateway.gateway.decide_approval("apr_nope", True)
    assert unknown.value.message == "approval apr_nope not found"


# -- grant isolation ------------------------------------------------------------------------------
async def test_a_grant_sees_and_controls_only_its_own_jobs_and_sessions(gateway: Harness) -> None:
    a = gateway.grant("a", ALLOW_ALL)
    b = gateway.grant("b", ALLOW_ALL)
    owners = await gateway.run("The owner's job.")
    a_job = await gateway.run("A's job.", caller=a)
    b_job = await gateway.run("B's job.", caller=b)  # newest session of all

    for other in (owners, b_job):
        other_id = other["job"]["id"]
        for tool in ("llm_job_status", "llm_job_watch", "llm_job_result", "llm_job_cancel"):
            seen = await gateway.call(tool, {"job_id": other_id}, a)
            assert seen.error == "not_found"
            assert seen.text == f"not_found: job {other_id} not found"  # as for an unknown id
        record = gateway.runtime.get(other_id)
        assert record is not None and record.cancel_reason is None
        session = other["session_id"]
        for tool, arguments in (
            ("codex_fork_session", {"prompt": "steal", "session_id": session}),
            ("codex_request_async", {"prompt": "steal", "session_id": session}),
            ("codex_request", {"prompt": "steal", "session_id": session}),
        ):
            refused = await gateway.call(tool, arguments, a)
            assert refused.text == f"not_found: session {session} not found", tool

    listed = await gateway.ok("llm_job_list", {}, a)
    assert (listed["total"], [j["id"] for j in listed["jobs"]]) == (1, [a_job["job"]["id"]])
    sessions = await gateway.ok("llm_session_list", {}, a)
    assert [s["session_id"] for s in sessions["sessions"]] == [a_job["session_id"]]
    fork = await gateway.ok("codex_fork_session", {"prompt": "mine", "last": True}, a)
    assert fork["job"]["parent_session_id"] == a_job["session_id"]  # not B's newer one
    await gateway.finished(fork["job"]["id"])

    everything = await gateway.ok("llm_job_list", {}, OWNER)
    assert everything["total"] == 4
    assert {j["caller"] for j in everything["jobs"]} == {"owner", "grant:a", "grant:b"}
    owner_sessions = await gateway.ok("llm_session_list", {}, OWNER)
    assert len(owner_sessions["sessions"]) == 4
    status = await gateway.ok("llm_job_status", {"job_id": b_job["job"]["id"]}, OWNER)
    assert status["job"]["caller"] == "grant:b"
    # B's session lives in B's own Codex home: the owner is told so instead of a broken resume.
    refused = await gateway.call(
        "codex_request", {"prompt": "The owner resumes B.", "session_id": b_job["session_id"]}
    )
    assert refused.is_error and refused.error == "invalid_input"
    assert "belongs to grant:b" in refused.text


async def test_a_grant_cannot_cancel_another_callers_running_job(fake_gateway: Harness) -> None:
    a = fake_gateway.grant("a", ALLOW_ALL)
    b = fake_gateway.grant("b", ALLOW_ALL)
    job_id = await submit(fake_gateway, b, "[fake:hang]")
    refused = await fake_gateway.call("llm_job_cancel", {"job_id": job_id}, a)
    assert refused.text == f"not_found: job {job_id} not found"
    record = fake_gateway.runtime.get(job_id)
    assert record is not None and not record.is_terminal
    cancelled = await fake_gateway.ok("llm_job_cancel", {"job_id": job_id}, b)
    assert cancelled["job"]["status"] == "cancelled"
    assert cancelled["job"]["cancel_reason"] == "cancelled by grant:b"


async def test_idempotency_keys_are_per_caller(fake_gateway: Harness) -> None:
    a = fake_gateway.grant("a", ALLOW_ALL)
    b = fake_gateway.grant("b", ALLOW_ALL)
    mine = await submit(fake_gateway, a, "x", idempotency_key="same")
    theirs = await submit(fake_gateway, b, "x", idempotency_key="same")
    assert mine != theirs


async def test_a_revoked_grant_is_refused_even_with_a_caller_already_resolved(
    fake_gateway: Harness,
) -> None:
    agent = fake_gateway.grant("agent", ALLOW_ALL)
    await fake_gateway.ok("llm_job_list", {}, agent)
    fake_gateway.gateway.revoke_grant("agent")
    assert fake_gateway.gateway.caller_for_token(fake_gateway.grants["agent"]) is None
    assert names(fake_gateway, agent) == []
    result = await fake_gateway.call("llm_job_list", {}, agent)
    assert_denied(result, "no policy for this caller: every tool is refused", "<no policy>")


# -- audit --------------------------------------------------------------------------------------
def canonical_sha256(arguments: dict[str, Any]) -> str:
    text = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validated(tool: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The arguments as the gateway sees them after validation (defaults filled in)."""
    model = REGISTRY[tool].input_model.model_validate(raw)
    dumped: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return dumped


async def test_every_decision_is_audited_with_keys_and_a_hash_never_values(
    fake_gateway: Harness,
) -> None:
    secret = "SECRET-PROMPT-7f3a do not log me"
    secret_dir = fake_gateway.tmp / "secret-project-dir"
    gw = fake_gateway.gateway
    agent = fake_gateway.grant(
        "agent",
        {
            "version": "1",
            "default": "deny",
            "tools": {
                "codex_request_async": {"action": "require_approval"},
                "llm_job_status": {},
                "codex_request": {
                    "deny_if": [{"path": "args.prompt", "op": "contains", "value": "7f3a"}]
                },
            },
        },
    )
    allowed = {"prompt": secret, "idempotency_key": "secret-key-1"}
    job_id = await submit(fake_gateway, OWNER, **allowed)
    await fake_gateway.call("codex_request", {"prompt": secret}, agent)  # deny_if
    await fake_gateway.call("llm_job_list", {}, agent)  # default deny
    await fake_gateway.call("codex_request_async", {"prompt": secret, "bogus": secret}, agent)
    held = await fake_gateway.ok("codex_request_async", {"prompt": secret}, agent)
    await gw.decide_approval(held["approval"]["id"], False, decided_by="owner")
    await fake_gateway.call("llm_job_status", {"job_id": "secretjob77"}, agent)  # not found
    await fake_gateway.call(
        "codex_request_async", {"prompt": secret, "working_dir": str(secret_dir)}, OWNER
    )  # refused by the runtime: no such directory

    records = list(reversed(gw.store.query_audit(limit=100)))
    summary = [(r.caller, r.tool, r.decision) for r in records]
    assert summary == [
        ("owner", "codex_request_async", "allow"),
        ("grant:agent", "codex_request", "deny"),
        ("grant:agent", "llm_job_list", "deny"),
        ("grant:agent", "codex_request_async", "invalid"),
        ("grant:agent", "codex_request_async", "approval_pending"),
        ("grant:agent", "codex_request_async", "denied"),
        ("grant:agent", "llm_job_status", "error"),
        ("owner", "codex_request_async", "error"),
    ]
    first = records[0]
    expected = validated("codex_request_async", allowed)
    assert first.arg_keys == sorted(expected)
    assert first.args_sha256 == canonical_sha256(expected)
    assert first.rule == "/default"
    assert records[1].rule == "/tools/codex_request/deny_if/0"
    assert records[2].rule == "/default"
    assert records[3].arg_keys == ["bogus", "prompt"]
    assert records[3].args_sha256 == canonical_sha256({"prompt": secret, "bogus": secret})
    assert records[4].approval_id == records[5].approval_id == held["approval"]["id"]
    assert records[5].message == "denied by owner"
    assert records[6].message == "job <value> not found"  # the message, without the value
    assert records[7].message == "working_dir: <value> is not a directory"
    assert all(r.ts > 0 for r in records)
    assert job_id

    rows = fake_gateway.runtime.database.query("SELECT * FROM audit")
    dumped = json.dumps([dict(row) for row in rows])
    for value in (secret, "secret-key-1", "secretjob77", "secret-project-dir"):
        assert value not in dumped, f"an argument value reached the audit log: {value!r}"


async def test_the_audit_can_be_queried_by_caller_tool_and_decision(fake_gateway: Harness) -> None:
    agent = fake_gateway.grant("agent", {"version": "1", "default": "deny"})
    await fake_gateway.call("llm_job_list", {}, OWNER)
    await fake_gateway.call("llm_job_list", {}, agent)
    await fake_gateway.call("llm_session_list", {}, agent)
    store = fake_gateway.gateway.store
    assert [r.tool for r in store.query_audit(caller="grant:agent")] == [
        "llm_session_list",
        "llm_job_list",
    ]
    assert [r.caller for r in store.query_audit(tool="llm_job_list")] == ["grant:agent", "owner"]
    assert [r.caller for r in store.query_audit(decision="allow")] == ["owner"]
    assert len(store.query_audit(limit=1)) == 1


def test_a_success_carries_its_answer_and_renders_it_as_compact_json_text() -> None:
    """MCP shows ``text``; REST answers with ``structured`` (the text is made only if read)."""

    class Answer(BaseModel):
        job_id: str
        note: str | None = None

    result = ToolResult.success(Answer(job_id="j1"))
    assert (result.is_error, result.error) == (False, None)
    assert result.structured == {"job_id": "j1", "note": None}
    assert result.text == '{"job_id":"j1","note":null}'
    assert result == ToolResult(False, '{"job_id":"j1","note":null}', result.structured)
    assert result != ToolResult.failure("not_found", "job j1 not found", field="job_id")

"""Failed calls count: unknown tools, invalid arguments, policy refusals and handler errors all
count toward a caller's ``all_tools`` limits, and repeated refusals are audited once per window
with a count, so no caller can make unbounded calls or audit rows.

A tool's own limits still count only calls admitted to it (given back when the call fails later:
tests/test_gateway.py); the fake Codex runs the few jobs these tests need.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tools.gateway_harness import OWNER, Harness, open_gateway

FIVE_A_MINUTE: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "all_tools": {"limits": [{"counter": "calls", "window": "minute", "max": 5, "scope": "grant"}]},
    "tools": {
        "llm_session_list": {"action": "deny", "reason": "not for agents"},
        "codex_request": {"deny_if": [{"path": "args.prompt", "op": "contains", "value": "no"}]},
    },
}
RATE_RULE = "/all_tools/limits/0"

# (tool, arguments, what the call gets while the caller is under its limit)
FAILING_CALLS: dict[str, tuple[str, dict[str, Any], str]] = {
    "unknown job id": ("llm_job_status", {"job_id": "nosuchjob"}, "not_found"),
    "unknown tool": ("llm_no_such_tool", {}, "not_found"),
    "invalid arguments": ("llm_job_list", {"limit": -1}, "invalid_input"),
    "unknown argument": ("llm_job_list", {"bogus": 1}, "invalid_input"),
    "denied tool": ("llm_session_list", {}, "policy_denied"),
    "deny_if": ("codex_request", {"prompt": "no"}, "policy_denied"),
}


class Clock:
    """The gateway's and the policy engine's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def serving(tmp_path: Path, clock: Clock) -> AsyncIterator[Harness]:
    async with open_gateway(tmp_path, fake=True, gateway_options={"clock": clock}) as harness:
        yield harness


@pytest.mark.parametrize("kind", sorted(FAILING_CALLS))
async def test_failed_calls_count_toward_all_tools_limits(serving: Harness, kind: str) -> None:
    tool, arguments, first_error = FAILING_CALLS[kind]
    agent = serving.grant("agent", FIVE_A_MINUTE)
    errors = [(await serving.call(tool, arguments, agent)).error for _ in range(10)]
    assert errors == [first_error] * 5 + ["rate_limited"] * 5
    limited = await serving.call("llm_job_list", {}, agent)  # a good call is over the limit too
    assert limited.error == "rate_limited"
    assert limited.structured["rule"] == RATE_RULE
    assert limited.structured["retry_after_seconds"] > 0


async def test_the_limit_reopens_after_its_window(serving: Harness, clock: Clock) -> None:
    agent = serving.grant("agent", FIVE_A_MINUTE)
    for _ in range(6):
        await serving.call("llm_job_status", {"job_id": "nosuchjob"}, agent)
    clock.now += 61
    await serving.ok("llm_job_list", {}, agent)


async def test_a_failing_handler_keeps_its_all_tools_hit_but_gives_its_tool_limit_back(
    serving: Harness,
) -> None:
    policy = {
        **FIVE_A_MINUTE,
        "tools": {"llm_job_status": {"limits": [{"counter": "status", "window": 60, "max": 1}]}},
    }
    agent = serving.grant("agent", policy)
    for _ in range(3):  # the tool's own limit of one is given back each time
        missing = await serving.call("llm_job_status", {"job_id": "nosuchjob"}, agent)
        assert missing.error == "not_found"
    submitted = await serving.ok("codex_request_async", {"prompt": "mine"}, agent)
    await serving.ok("llm_job_status", {"job_id": submitted["job"]["id"]}, agent)  # the 5th
    over = await serving.call("llm_job_status", {"job_id": submitted["job"]["id"]}, agent)
    assert (over.error, over.structured["rule"]) == ("rate_limited", RATE_RULE)


async def test_other_callers_are_not_charged(serving: Harness) -> None:
    agent = serving.grant("agent", FIVE_A_MINUTE)
    other = serving.grant("other", FIVE_A_MINUTE)
    for _ in range(10):
        await serving.call("llm_no_such_tool", {}, agent)
    await serving.ok("llm_job_list", {}, other)
    for _ in range(10):
        assert (await serving.call("llm_no_such_tool", {}, OWNER)).error == "not_found"
    await serving.ok("llm_job_list", {}, OWNER)  # the owner's policy has no limits


async def test_repeated_refusals_are_audited_once_per_window_with_a_count(
    serving: Harness, clock: Clock
) -> None:
    agent = serving.grant("agent", FIVE_A_MINUTE)
    store = serving.gateway.store
    for _ in range(50):
        await serving.call("llm_job_status", {"job_id": "nosuchjob"}, agent)
    for n in range(20):  # unknown tool names vary: still one run
        await serving.call(f"llm_probe_{n}", {}, agent)
    rows = [(r.tool, r.decision, r.rule) for r in reversed(store.query_audit(caller=agent.key))]
    assert rows == [
        ("llm_job_status", "error", "/default"),
        ("llm_job_status", "deny", RATE_RULE),
        ("llm_probe_0", "deny", RATE_RULE),
    ]

    clock.now += 61  # the window closes: the next refusal writes the count first
    assert (await serving.call("llm_job_status", {"job_id": "x"}, agent)).error == "not_found"
    serving.gateway.flush_audit()
    records = list(reversed(store.query_audit(caller=agent.key)))
    # A count is recorded at its run's last refusal (the audit is ordered by time).
    assert [(r.tool, r.decision, r.message.split(" until ")[0]) for r in records[3:]] == [
        ("llm_job_status", "error", "repeated 4 more times"),
        ("llm_job_status", "deny", "repeated 44 more times"),
        ("llm_probe_0", "deny", "repeated 19 more times"),
        ("llm_job_status", "error", "job <value> not found"),  # the new window's first
    ]
    counted = sum(int(r.message.split()[1]) for r in records if r.message.startswith("repeated"))
    assert len(records) - 3 + counted == 50 + 20 + 1  # every call is accounted for


async def test_an_unknown_tool_name_is_bounded_in_the_answer_and_the_audit(
    serving: Harness,
) -> None:
    name = "x" * 10_000 + "\x00\n"
    result = await serving.call(name, {}, OWNER)
    assert result.error == "not_found"
    assert len(result.text) < 200
    (record,) = serving.gateway.store.query_audit(caller="owner")
    assert record.tool == "x" * 64 + "..."


async def test_a_polling_agent_writes_one_audit_row_per_window_not_one_per_poll(
    serving: Harness, clock: Clock
) -> None:
    agent = serving.grant("poller", {"version": "1", "default": "allow"})
    job = await serving.run("poll me", caller=agent)
    store = serving.gateway.store
    before = len(store.query_audit(caller=agent.key))
    for _ in range(30):
        result = await serving.call("llm_job_status", {"job_id": job["job"]["id"]}, agent)
        assert not result.is_error
    reads = [r for r in store.query_audit(caller=agent.key) if r.tool == "llm_job_status"]
    assert len(store.query_audit(caller=agent.key)) == before + 1 and len(reads) == 1
    clock.now += 61
    serving.gateway.flush_audit()
    reads = [r for r in store.query_audit(caller=agent.key) if r.tool == "llm_job_status"]
    assert [r.decision for r in reads] == ["allow", "allow"]
    assert any(r.message.startswith("repeated 29 more times") for r in reads)

"""Budgets: limits that count what jobs used (tokens, US dollars) instead of calls.

A job is admitted while its budgets have room; the gateway charges the job's usage as it is
reported; a full budget refuses new jobs with what was used and when it frees up, and never
refuses a call that starts no job.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from llmgw_jupyter.policy import PolicyEngine, PolicyValidationError, load_policy
from llmgw_jupyter.store.policy import PolicyStore

DAY = 86400.0


def budget_policy(*limits: dict[str, Any], tool_limits: list[dict[str, Any]] | None = None) -> Any:
    tools: dict[str, Any] = {"codex_request_async": {}, "llm_job_status": {}}
    if tool_limits:
        tools["codex_request_async"] = {"limits": tool_limits}
    return load_policy(
        {"version": "1", "default": "deny", "tools": tools, "all_tools": {"limits": list(limits)}}
    )


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyValidationError) as caught:
        load_policy(data)
    return [str(error) for error in caught.value.errors]


def start(engine: PolicyEngine, policy: Any, caller: str = "grant:a") -> Any:
    return engine.decide(policy, "codex_request_async", {"prompt": "hi"}, caller, starts_job=True)


# -- the policy language --------------------------------------------------------------------
def test_a_budget_is_a_limit_with_a_measure() -> None:
    policy = budget_policy(
        {"counter": "spend", "window": "day", "max": 2, "measure": "cost_usd"},
        {
            "counter": "tok",
            "window": "hour",
            "max": 5_000_000,
            "measure": "tokens",
            "scope": "global",
        },
        {"counter": "calls", "window": "minute", "max": 10},
    )
    assert [x.describe() for x in policy.all_budgets] == [
        "spend: at most 2 USD per day per caller",
        "tok: at most 5,000,000 tokens per hour for all callers",
    ]
    assert [x.describe() for x in policy.all_limits] == [
        "calls: at most 10 calls per minute per caller"
    ]


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ({"measure": "cost_usd", "max": 0}, "max: must be a number > 0 for measure cost_usd"),
        ({"measure": "cost_usd", "max": "2"}, "max: must be a number > 0 for measure cost_usd"),
        ({"measure": "tokens", "max": 2.5}, "max: must be an integer"),
        ({"measure": "tokens", "max": 0}, "max: must be >= 1"),
        ({"measure": "dollars", "max": 1}, "measure: must be 'calls', 'tokens' or 'cost_usd'"),
    ],
)
def test_bad_budgets_name_the_field_and_the_rule(limit: dict[str, Any], message: str) -> None:
    data = {
        "version": "1",
        "all_tools": {"limits": [{"counter": "b", "window": "day", **limit}]},
    }
    assert errors_of(data) == [f"/all_tools/limits/0/{message}"]


def test_a_cost_budget_may_be_a_fraction_of_a_dollar() -> None:
    policy = budget_policy({"counter": "b", "window": 60, "max": 0.25, "measure": "cost_usd"})
    assert policy.all_budgets[0].max == 0.25


# -- admission and charging -----------------------------------------------------------------
def test_a_job_is_admitted_while_its_budget_has_room(
    engine: PolicyEngine, store: PolicyStore, clock: Any
) -> None:
    policy = budget_policy({"counter": "tok", "window": "day", "max": 1000, "measure": "tokens"})
    first = start(engine, policy)
    assert first.allowed and len(first.budgets) == 1
    store.attach_budgets("job-1", first.budgets)
    store.charge_job("job-1", tokens=600, cost_usd=None, now=clock())
    assert start(engine, policy).allowed  # 600 of 1000 used: room left
    store.charge_job("job-1", tokens=1000, cost_usd=None, now=clock())  # it went on running
    refused = start(engine, policy)
    assert refused.denied
    assert refused.rule == "/all_tools/limits/0"
    assert refused.reason == (
        "budget exhausted: tok: at most 1,000 tokens per day per caller; "
        "used 1,000 tokens of 1,000 tokens"
    )
    assert refused.retry_after_seconds == pytest.approx(DAY)
    assert "retry_after_seconds: 86400.000" in refused.denial_text()


def test_a_full_budget_frees_up_as_its_oldest_charges_leave_the_window(
    engine: PolicyEngine, store: PolicyStore, clock: Any
) -> None:
    policy = budget_policy({"counter": "usd", "window": 3600, "max": 1.0, "measure": "cost_usd"})
    for index, cost in enumerate((0.4, 0.4, 0.4)):
        decision = start(engine, policy)
        assert decision.allowed, index
        store.attach_budgets(f"job-{index}", decision.budgets)
        store.charge_job(f"job-{index}", tokens=10, cost_usd=cost, final=True, now=clock())
        clock.advance(600)
    # 1.2 USD used; the first 0.4 leaves the window 3600 s after it was charged.
    refused = start(engine, policy)
    assert refused.denied and "used 1.2 USD of 1 USD" in refused.reason
    assert refused.retry_after_seconds == pytest.approx(3600 - 1800)
    clock.advance(refused.retry_after_seconds + 0.001)
    assert start(engine, policy).allowed


def test_budgets_never_refuse_a_call_that_starts_no_job(
    engine: PolicyEngine, store: PolicyStore, clock: Any
) -> None:
    policy = budget_policy({"counter": "tok", "window": "day", "max": 1, "measure": "tokens"})
    decision = start(engine, policy)
    store.attach_budgets("job-1", decision.budgets)
    store.charge_job("job-1", tokens=50, cost_usd=None, now=clock())
    assert start(engine, policy).denied
    status = engine.decide(policy, "llm_job_status", {"job_id": "job-1"}, "grant:a")
    assert status.allowed and status.budgets == ()


def test_grant_budgets_are_per_caller_and_global_ones_shared(
    engine: PolicyEngine, store: PolicyStore, clock: Any
) -> None:
    per_grant = budget_policy({"counter": "t", "window": "day", "max": 10, "measure": "tokens"})
    shared = budget_policy(
        {"counter": "g", "window": "day", "max": 10, "measure": "tokens", "scope": "global"}
    )
    for policy, name in ((per_grant, "a"), (shared, "s")):
        decision = start(engine, policy, "grant:a")
        store.attach_budgets(f"job-{name}", decision.budgets)
        store.charge_job(f"job-{name}", tokens=10, cost_usd=None, now=clock())
    assert start(engine, per_grant, "grant:a").denied
    assert start(engine, per_grant, "grant:b").allowed
    assert start(engine, shared, "grant:b").denied


def test_a_tools_own_budget_applies_to_that_tool(
    engine: PolicyEngine, store: PolicyStore, clock: Any
) -> None:
    policy = budget_policy(
        tool_limits=[{"counter": "c", "window": "day", "max": 0.5, "measure": "cost_usd"}]
    )
    decision = start(engine, policy)
    assert decision.allowed and [b.measure for b in decision.budgets] == ["cost_usd"]
    store.attach_budgets("job-1", decision.budgets)
    store.charge_job("job-1", tokens=0, cost_usd=0.75, now=clock())
    refused = start(engine, policy)
    assert refused.rule == "/tools/codex_request_async/limits/0"


def test_charges_are_exact_however_often_and_concurrently_usage_is_reported(
    engine: PolicyEngine, store: PolicyStore, clock: Any
) -> None:
    policy = budget_policy(
        {"counter": "t", "window": "day", "max": 10**9, "measure": "tokens"},
        {"counter": "d", "window": "day", "max": 100, "measure": "cost_usd"},
    )
    decision = start(engine, policy)
    store.attach_budgets("job-1", decision.budgets)
    store.attach_budgets("job-1", decision.budgets)  # attaching twice changes nothing
    reports = [(tokens, tokens / 1000) for tokens in range(0, 4001, 100)]

    def report(offset: int) -> None:
        for tokens, cost in reports[offset:] + reports[:offset]:
            store.charge_job("job-1", tokens=tokens, cost_usd=cost, now=clock())

    threads = [threading.Thread(target=report, args=(n * 5,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    keys = {b.measure: b.budget_key for b in decision.budgets}
    assert store.budget_used(keys["tokens"], DAY, now=clock()) == 4000
    assert store.budget_used(keys["cost_usd"], DAY, now=clock()) == pytest.approx(4.0)


def test_a_settled_job_is_never_charged_again(
    engine: PolicyEngine, store: PolicyStore, clock: Any
) -> None:
    policy = budget_policy({"counter": "t", "window": "day", "max": 100, "measure": "tokens"})
    decision = start(engine, policy)
    store.attach_budgets("job-1", decision.budgets)
    store.charge_job("job-1", tokens=30, cost_usd=None, final=True, now=clock())
    assert store.open_budget_jobs() == []
    store.charge_job("job-1", tokens=90, cost_usd=None, now=clock())
    assert store.budget_used(decision.budgets[0].budget_key, DAY, now=clock()) == 30


def test_a_refused_job_still_counts_toward_all_tools_rate_limits(
    engine: PolicyEngine, store: PolicyStore, clock: Any
) -> None:
    policy = budget_policy(
        {"counter": "t", "window": "day", "max": 1, "measure": "tokens"},
        {"counter": "calls", "window": "day", "max": 3},
    )
    decision = start(engine, policy)
    store.attach_budgets("job-1", decision.budgets)
    store.charge_job("job-1", tokens=5, cost_usd=None, now=clock())
    assert start(engine, policy).reason.startswith("budget exhausted")
    assert start(engine, policy).reason.startswith("budget exhausted")
    over = start(engine, policy)  # the 4th call of the day
    assert over.reason.startswith("rate limit exceeded: calls")


def test_old_charges_of_settled_jobs_are_pruned(
    engine: PolicyEngine, store: PolicyStore, clock: Any
) -> None:
    policy = budget_policy({"counter": "t", "window": 60, "max": 100, "measure": "tokens"})
    for name, final in (("done", True), ("running", False)):
        decision = start(engine, policy)
        store.attach_budgets(name, decision.budgets)
        store.charge_job(name, tokens=10, cost_usd=None, final=final, now=clock())
    clock.advance(120)
    assert store.prune_budget_charges(clock()) == 1  # the running job keeps its charges

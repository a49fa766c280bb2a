"""Decisions: order of checks, the deciding rule, visibility and the published examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmgw_jupyter.policy import (
    DENIAL_PREFIX,
    Decision,
    PolicyEngine,
    allow_all_policy,
    load_policy,
    parse_policy_text,
)

ALL_TOOLS = [
    "codex_request",
    "codex_request_async",
    "codex_fork_session",
    "llm_job_status",
    "llm_job_watch",
    "llm_job_result",
    "llm_job_cancel",
    "llm_job_list",
    "llm_session_list",
]
POLICYLAYER_ASYNC = (
    '{"version": "1", "default": "deny", "tools": {"codex_request_async": {"limits": '
    '[{"counter": "codex_request_async_rate", "window": "minute", "max": 10, "scope": "grant"}]}}}'
)


def policy_of(tools: dict[str, Any], **top: Any) -> Any:
    return load_policy({"version": "1", "default": "deny", "tools": tools, **top})


def test_policylayer_async_example_behaves_as_written(engine: PolicyEngine, clock: Any) -> None:
    policy = parse_policy_text(POLICYLAYER_ASYNC)
    for tool in ALL_TOOLS:
        if tool != "codex_request_async":
            decision = engine.decide(policy, tool, {"prompt": "hi"}, "grant:a")
            assert (decision.outcome, decision.rule) == ("deny", "/default"), tool
    outcomes = [
        engine.decide(policy, "codex_request_async", {"prompt": "hi"}, "grant:a").outcome
        for _ in range(12)
    ]
    assert outcomes == ["allow"] * 10 + ["deny"] * 2
    refused = engine.decide(policy, "codex_request_async", {}, "grant:a")
    assert refused.rule == "/tools/codex_request_async/limits/0"
    assert refused.retry_after_seconds == pytest.approx(60.0)
    # Per grant: another grant has its own 10.
    assert engine.decide(policy, "codex_request_async", {}, "grant:b").allowed
    clock.advance(60.0)
    assert engine.decide(policy, "codex_request_async", {}, "grant:a").allowed
    assert engine.visible_tools(policy, ALL_TOOLS) == ["codex_request_async"]


def test_missing_policy_refuses_everything(engine: PolicyEngine) -> None:
    decision = engine.decide(None, "llm_job_status", {}, "grant:x")
    assert decision.denied and "no policy" in decision.reason
    assert engine.visible_tools(None, ALL_TOOLS) == []
    assert decision.denial_text().startswith(DENIAL_PREFIX)


def test_default_owner_policy_allows_everything(engine: PolicyEngine) -> None:
    policy = allow_all_policy()
    for tool in ALL_TOOLS:
        decision = engine.decide(policy, tool, {"sandbox": "danger-full-access"}, "owner")
        assert (decision.outcome, decision.rule) == ("allow", "/default")
    assert engine.visible_tools(policy, ALL_TOOLS) == ALL_TOOLS


def test_default_allow_and_empty_rule_under_deny(engine: PolicyEngine) -> None:
    allow = load_policy({"version": "1", "default": "allow", "tools": {"x": {"action": "deny"}}})
    assert engine.decide(allow, "anything", {}, "owner").allowed
    assert engine.decide(allow, "x", {}, "owner").rule == "/tools/x/action"
    deny = policy_of({"listed": {}})
    assert engine.decide(deny, "listed", {}, "owner").rule == "/tools/listed"
    assert engine.decide(deny, "unlisted", {}, "owner").rule == "/default"


def test_hide_refuses_and_removes_from_the_list(engine: PolicyEngine) -> None:
    policy = load_policy({"version": "1", "default": "allow", "hide": ["a", "b"]})
    decision = engine.decide(policy, "b", {}, "owner")
    assert (decision.outcome, decision.rule) == ("deny", "/hide/1")
    assert engine.visible_tools(policy, ["a", "b", "c"]) == ["c"]
    star = load_policy({"version": "1", "default": "allow", "hide": ["*"], "tools": {"c": {}}})
    assert engine.decide(star, "c", {}, "owner").rule == "/hide/0"
    assert engine.visible_tools(star, ["a", "b", "c"]) == []


def test_action_deny_uses_its_reason(engine: PolicyEngine) -> None:
    policy = policy_of({"codex_request": {"action": "deny", "reason": "use the async tool"}})
    decision = engine.decide(policy, "codex_request", {}, "owner")
    assert decision.reason == "use the async tool"
    assert decision.denial_text() == (
        "[POLICY DENIED] use the async tool (rule: /tools/codex_request/action)"
    )
    assert decision.to_dict() == {
        "decision": "deny",
        "reason": "use the async tool",
        "rule": "/tools/codex_request/action",
    }


def test_require(engine: PolicyEngine) -> None:
    policy = policy_of({"t": {"require": ["args.prompt", "args.opts.dir"]}})
    decision = engine.decide(policy, "t", {"prompt": "x"}, "owner")
    assert (decision.rule, decision.reason) == (
        "/tools/t/require/1",
        "missing required argument args.opts.dir",
    )
    assert engine.decide(policy, "t", {"prompt": "x", "opts": {"dir": None}}, "owner").denied
    assert engine.decide(policy, "t", {"prompt": "x", "opts": {"dir": "/"}}, "owner").allowed


def test_deny_if_refuses_when_a_condition_holds(engine: PolicyEngine) -> None:
    conditions = [
        {"path": "args.sandbox", "op": "eq", "value": "danger-full-access", "reason": "no"},
        {"path": "args.prompt", "op": "max_length", "value": 5},
    ]
    policy = policy_of({"t": {"deny_if": conditions}})
    full = engine.decide(policy, "t", {"sandbox": "danger-full-access"}, "owner")
    assert (full.outcome, full.rule, full.reason) == ("deny", "/tools/t/deny_if/0", "no")
    short = engine.decide(policy, "t", {"prompt": "hey"}, "owner")
    assert (short.rule, short.reason) == (
        "/tools/t/deny_if/1",
        "denied because args.prompt max_length 5",
    )
    assert engine.decide(policy, "t", {"prompt": "a long prompt"}, "owner").allowed
    assert engine.decide(policy, "t", {}, "owner").allowed  # nothing holds on missing values


def test_arg_rules_must_all_hold(engine: PolicyEngine) -> None:
    rules = [
        {"path": "args.model", "op": "in", "value": ["gpt-5", "o3"]},
        {"path": "args.timeout_seconds", "op": "lte", "value": 600, "reason": "too long"},
    ]
    policy = policy_of({"t": {"arg_rules": rules}})
    ok = engine.decide(policy, "t", {"model": "o3", "timeout_seconds": 60}, "owner")
    assert ok.allowed
    bad_model = engine.decide(policy, "t", {"model": "x", "timeout_seconds": 60}, "owner")
    assert (bad_model.rule, bad_model.reason) == (
        "/tools/t/arg_rules/0",
        'argument rule not met: args.model in ["gpt-5", "o3"]',
    )
    too_long = engine.decide(policy, "t", {"model": "o3", "timeout_seconds": 601}, "owner")
    assert (too_long.rule, too_long.reason) == ("/tools/t/arg_rules/1", "too long")
    missing = engine.decide(policy, "t", {"model": "o3"}, "owner")
    assert missing.rule == "/tools/t/arg_rules/1"


def test_unevaluable_values_are_refused_in_both_lists(engine: PolicyEngine) -> None:
    deny_if = policy_of({"t": {"deny_if": [{"path": "args.n", "op": "gt", "value": 3}]}})
    decision = engine.decide(deny_if, "t", {"n": "4"}, "owner")
    assert decision.denied and decision.reason.startswith("cannot evaluate args.n gt 3")
    arg_rules = policy_of({"t": {"arg_rules": [{"path": "args.n", "op": "gt", "value": 3}]}})
    assert engine.decide(arg_rules, "t", {"n": [4]}, "owner").denied


def test_within_rule_from_the_issue(
    engine: PolicyEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "projects" / "app").mkdir(parents=True)
    rule = {
        "require": ["args.working_dir"],
        "arg_rules": [{"path": "args.working_dir", "op": "within", "value": ["~/projects"]}],
    }
    policy = policy_of({"codex_request_async": rule})
    inside = {"working_dir": str(tmp_path / "projects" / "app")}
    assert engine.decide(policy, "codex_request_async", inside, "grant:g").allowed
    outside = engine.decide(policy, "codex_request_async", {"working_dir": "/"}, "grant:g")
    assert outside.rule == "/tools/codex_request_async/arg_rules/0"


def test_order_of_checks(engine: PolicyEngine, store: Any) -> None:
    """hide > action > require > deny_if > arg_rules > limits > approval; refusals take nothing."""
    tool = {
        "action": "require_approval",
        "approval": {"timeout": "90s"},
        "require": ["args.a"],
        "deny_if": [{"path": "args.a", "op": "eq", "value": "bad"}],
        "arg_rules": [{"path": "args.a", "op": "regex", "value": "^ok"}],
        "limits": [{"counter": "c", "window": "minute", "max": 1}],
    }
    policy = policy_of({"t": tool})
    hidden = policy_of({"t": tool}, hide=["t"])
    assert engine.decide(hidden, "t", {"a": "ok"}, "owner").rule == "/hide/0"
    denied = policy_of({"t": {**tool, "action": "deny", "approval": None}})
    assert engine.decide(denied, "t", {}, "owner").rule == "/tools/t/action"
    assert engine.decide(policy, "t", {}, "owner").rule == "/tools/t/require/0"
    assert engine.decide(policy, "t", {"a": "bad"}, "owner").rule == "/tools/t/deny_if/0"
    assert engine.decide(policy, "t", {"a": "nope"}, "owner").rule == "/tools/t/arg_rules/0"
    first = engine.decide(policy, "t", {"a": "ok"}, "owner")
    assert first.outcome == "require_approval"
    assert first.rule == "/tools/t/action"
    assert first.approval_timeout_seconds == 90.0
    assert len(first.reservation) == 1
    second = engine.decide(policy, "t", {"a": "ok"}, "owner")
    assert (second.outcome, second.rule) == ("deny", "/tools/t/limits/0")
    # The approval is denied: the reservation goes back and the next call gets through.
    assert engine.release(first) == 1
    assert engine.release(first) == 0
    assert engine.decide(policy, "t", {"a": "ok"}, "owner").outcome == "require_approval"


def test_all_tools_limits_come_first_and_apply_to_unlisted_tools(
    engine: PolicyEngine,
) -> None:
    policy = load_policy(
        {
            "version": "1",
            "default": "allow",
            "all_tools": {"limits": [{"counter": "all", "window": 10, "max": 3}]},
            "tools": {"t": {"limits": [{"counter": "t", "window": 10, "max": 1}]}},
        }
    )
    assert engine.decide(policy, "t", {}, "g").allowed
    refused = engine.decide(policy, "t", {}, "g")
    assert refused.rule == "/tools/t/limits/0"
    # The refused call took nothing from "all": two more unlisted calls fit, then all_tools.
    assert engine.decide(policy, "other", {}, "g").allowed
    assert engine.decide(policy, "other", {}, "g").allowed
    assert engine.decide(policy, "other", {}, "g").rule == "/all_tools/limits/0"
    both = engine.decide(policy, "t", {}, "g")
    assert both.rule == "/all_tools/limits/0"  # the first blocking limit is named


def test_same_counter_name_in_two_places_is_one_counter(engine: PolicyEngine) -> None:
    limit = {"counter": "shared", "window": "hour", "max": 3, "scope": "global"}
    policy = policy_of({"a": {"limits": [limit]}, "b": {"limits": [limit]}})
    results = [engine.decide(policy, tool, {}, f"grant:{tool}").allowed for tool in "abab"]
    assert results == [True, True, True, False]


def test_same_counter_in_all_tools_and_tool_counts_once_per_call(engine: PolicyEngine) -> None:
    policy = policy_of(
        {"t": {"limits": [{"counter": "c", "window": 60, "max": 5}]}},
        all_tools={"limits": [{"counter": "c", "window": 3600, "max": 3}]},
    )
    results = [engine.decide(policy, "t", {}, "g").allowed for _ in range(4)]
    assert results == [True, True, True, False]


def test_grant_and_global_scopes(engine: PolicyEngine) -> None:
    policy = policy_of(
        {
            "g": {"limits": [{"counter": "per", "window": 60, "max": 1, "scope": "grant"}]},
            "x": {"limits": [{"counter": "all", "window": 60, "max": 1, "scope": "global"}]},
        }
    )
    assert engine.decide(policy, "g", {}, "grant:1").allowed
    assert engine.decide(policy, "g", {}, "grant:2").allowed
    assert engine.decide(policy, "g", {}, "grant:1").denied
    assert engine.decide(policy, "x", {}, "grant:1").allowed
    assert engine.decide(policy, "x", {}, "grant:2").denied


def test_visible_tools(engine: PolicyEngine) -> None:
    policy = load_policy(
        {
            "version": "1",
            "default": "deny",
            "hide": ["llm_session_list"],
            "tools": {
                "codex_fork_session": {"action": "require_approval"},
                "codex_request": {"action": "deny"},
                "llm_job_status": {},
                "llm_session_list": {},
            },
        }
    )
    assert engine.visible_tools(policy, ALL_TOOLS) == ["codex_fork_session", "llm_job_status"]


def test_rate_limit_denial_text_gives_retry_after(engine: PolicyEngine, clock: Any) -> None:
    policy = policy_of({"t": {"limits": [{"counter": "c", "window": "minute", "max": 1}]}})
    engine.decide(policy, "t", {}, "g")
    clock.advance(15)
    refused = engine.decide(policy, "t", {}, "g")
    assert refused.retry_after_seconds == pytest.approx(45.0)
    assert refused.denial_text().startswith("[POLICY DENIED] rate limit exceeded: c: at most 1")
    assert "retry_after_seconds: 45.000" in refused.denial_text()
    assert refused.to_dict()["retry_after_seconds"] == 45.0
    assert json.dumps(refused.to_dict())


def test_decision_is_frozen() -> None:
    decision = Decision("allow", "r", "/default")
    with pytest.raises(AttributeError):
        decision.outcome = "deny"  # type: ignore[misc]

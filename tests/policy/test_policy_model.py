"""Policy documents: what loads, and errors that name the JSON pointer and the rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmgw_jupyter.policy import (
    PolicyValidationError,
    load_policy,
    parse_policy_text,
)
from llmgw_jupyter.policy.model import DEFAULT_APPROVAL_TIMEOUT, WINDOW_RULE

POLICYLAYER_ASYNC = (
    '{"version": "1", "default": "deny", "tools": {"codex_request_async": {"limits": '
    '[{"counter": "codex_request_async_rate", "window": "minute", "max": 10, "scope": "grant"}]}}}'
)
POLICYLAYER_FORK = POLICYLAYER_ASYNC.replace("codex_request_async", "codex_fork_session")

ISSUE_EXAMPLE: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "hide": ["llm_session_list"],
    "all_tools": {
        "limits": [{"counter": "all_calls", "window": "minute", "max": 120, "scope": "grant"}]
    },
    "tools": {
        "codex_request_async": {
            "limits": [{"counter": "codex_async_rate", "window": "minute", "max": 10}],
            "deny_if": [
                {
                    "path": "args.sandbox",
                    "op": "eq",
                    "value": "danger-full-access",
                    "reason": "no full access for agents",
                }
            ],
            "require": ["args.working_dir"],
            "arg_rules": [{"path": "args.working_dir", "op": "within", "value": ["~/projects"]}],
        },
        "codex_fork_session": {"action": "require_approval", "approval": {"timeout": "10m"}},
        "llm_job_status": {},
        "llm_job_result": {},
        "codex_request": {"action": "deny", "reason": "use the async tool"},
    },
}


def errors_of(data: Any) -> list[str]:
    with pytest.raises(PolicyValidationError) as info:
        load_policy(data)
    return [str(e) for e in info.value.errors]


@pytest.mark.parametrize("text", [POLICYLAYER_ASYNC, POLICYLAYER_FORK])
def test_policylayer_published_policies_load_unchanged(text: str) -> None:
    policy = parse_policy_text(text)
    assert policy.to_dict() == json.loads(text)
    (tool,) = policy.tools.values()
    (limit,) = tool.limits
    assert (limit.counter, limit.window, limit.max, limit.scope) == (
        tool.name + "_rate",
        60.0,
        10,
        "grant",
    )
    assert tool.action == "allow" and policy.default == "deny"


def test_issue_example_loads_with_every_field() -> None:
    policy = load_policy(ISSUE_EXAMPLE)
    assert policy.hidden == {"llm_session_list": "/hide/0"}
    assert [x.counter for x in policy.all_limits] == ["all_calls"]
    async_rule = policy.tools["codex_request_async"]
    assert async_rule.limits[0].scope == "grant"  # the default scope
    assert async_rule.require[0].pointer == "/tools/codex_request_async/require/0"
    assert async_rule.deny_if[0].reason == "no full access for agents"
    assert policy.tools["codex_fork_session"].approval_timeout == 600.0
    assert policy.tools["codex_request"].action_pointer == "/tools/codex_request/action"
    assert policy.tools["llm_job_status"].action_pointer == "/tools/llm_job_status"


def test_defaults_fail_closed() -> None:
    policy = load_policy({"version": "1"})
    assert policy.default == "deny" and policy.tools == {} and policy.hidden == {}


def test_the_documented_window_error_message() -> None:
    data = json.loads(POLICYLAYER_ASYNC)
    data["tools"]["codex_request_async"]["limits"][0]["window"] = "fortnight"
    assert errors_of(data) == [f"/tools/codex_request_async/limits/0/window: {WINDOW_RULE}"]
    assert WINDOW_RULE == "must be second, minute, hour, day or a positive number of seconds"


def test_all_errors_are_collected_with_pointers() -> None:
    data = {
        "version": 1,
        "default": "maybe",
        "hide": "everything",
        "surprise": True,
        "tools": {
            "a/b": {
                "action": "allow",
                "approval": {"timeout": "10m"},
                "require": ["args.ok", "working_dir"],
                "limits": [{"counter": "", "window": -5, "max": 0, "scope": "team"}],
                "deny_if": [
                    {"path": "x", "op": "lt", "value": "a"},
                    {"path": "args.a", "op": "regex", "value": "("},
                    {"path": "args.a", "op": "like", "value": 1},
                    {"path": "args.a", "op": "in"},
                    {"path": "args.a", "op": "eq", "value": 1, "color": "red"},
                ],
            }
        },
    }
    found = errors_of(data)
    expected = {
        '/version: must be "1" (a string)',
        "/default: must be 'allow' or 'deny'",
        "/hide: must be a list",
        "/surprise: unknown key",
        "/tools/a~1b/approval: only allowed with action require_approval",
        '/tools/a~1b/require/1: must be "args.<name>" with dot-separated segments, '
        'e.g. "args.working_dir"',
        "/tools/a~1b/limits/0/counter: must not be empty",
        f"/tools/a~1b/limits/0/window: {WINDOW_RULE}",
        "/tools/a~1b/limits/0/max: must be >= 1",
        "/tools/a~1b/limits/0/scope: must be 'grant' or 'global'",
        "/tools/a~1b/deny_if/0/value: must be a number for op lt",
        "/tools/a~1b/deny_if/1/value: invalid regular expression: missing ), "
        "unterminated subpattern at position 0",
        "/tools/a~1b/deny_if/3/value: is required for op in",
        "/tools/a~1b/deny_if/4/color: unknown key",
    }
    assert expected <= set(found)
    assert any(e.startswith("/tools/a~1b/deny_if/0/path: must be") for e in found)
    assert any(e.startswith("/tools/a~1b/deny_if/2/op: must be 'eq', 'neq'") for e in found)


@pytest.mark.parametrize(
    ("where", "bad", "message"),
    [
        ("action", "maybe", "must be 'allow', 'deny' or 'require_approval'"),
        ("reason", 5, "must be a string"),
        ("require", "args.a", "must be a list"),
        ("deny_if", {"path": "args.a"}, "must be a list"),
        ("arg_rules", [{"op": "eq", "value": 1}], None),
        ("limits", [{"counter": "c", "window": "minute"}], None),
        ("approval", {"timeout": "soon"}, None),
        ("unknown_field", 1, "unknown key"),
    ],
)
def test_each_tool_field_is_checked(where: str, bad: Any, message: str | None) -> None:
    rule: dict[str, Any] = {"action": "require_approval", where: bad}
    if where == "action":
        rule = {"action": bad}
    found = errors_of({"version": "1", "tools": {"t": rule}})
    assert found, "the bad field must be reported"
    assert all(e.startswith(f"/tools/t/{where}") for e in found), found
    if message is not None:
        assert found == [f"/tools/t/{where}: {message}"]


def test_missing_fields_are_named() -> None:
    found = errors_of({"version": "1", "tools": {"t": {"arg_rules": [{"op": "eq", "value": 1}]}}})
    assert found == ["/tools/t/arg_rules/0/path: is required"]
    found = errors_of({"version": "1", "tools": {"t": {"limits": [{"counter": "c"}]}}})
    assert set(found) == {
        "/tools/t/limits/0/window: is required",
        "/tools/t/limits/0/max: is required",
    }
    assert errors_of({"default": "allow"}) == ["/version: is required"]


@pytest.mark.parametrize(
    ("window", "seconds"),
    [("second", 1.0), ("minute", 60.0), ("hour", 3600.0), ("day", 86400.0), (90, 90.0), (0.5, 0.5)],
)
def test_windows(window: Any, seconds: float) -> None:
    policy = load_policy(
        {"version": "1", "all_tools": {"limits": [{"counter": "c", "window": window, "max": 1}]}}
    )
    assert policy.all_limits[0].window == seconds


@pytest.mark.parametrize("window", [0, -1, "minutes", True, None, [60], float("inf")])
def test_bad_windows(window: Any) -> None:
    data = {"version": "1", "all_tools": {"limits": [{"counter": "c", "window": window, "max": 1}]}}
    assert errors_of(data) == [f"/all_tools/limits/0/window: {WINDOW_RULE}"]


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [
        ("10m", 600.0),
        ("30s", 30.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("45", 45.0),
        (12, 12.0),
        (1.5, 1.5),
    ],
)
def test_approval_timeouts(timeout: Any, seconds: float) -> None:
    rule = {"action": "require_approval", "approval": {"timeout": timeout}}
    policy = load_policy({"version": "1", "tools": {"t": rule}})
    assert policy.tools["t"].approval_timeout == seconds


def test_approval_timeout_default_and_errors() -> None:
    policy = load_policy({"version": "1", "tools": {"t": {"action": "require_approval"}}})
    assert policy.tools["t"].approval_timeout == DEFAULT_APPROVAL_TIMEOUT
    for bad in ("0m", "ten minutes", -3, False):
        rule = {"action": "require_approval", "approval": {"timeout": bad}}
        (error,) = errors_of({"version": "1", "tools": {"t": rule}})
        assert error.startswith("/tools/t/approval/timeout: must be a positive number of seconds")


@pytest.mark.parametrize(
    ("op", "value", "message"),
    [
        ("in", "a", "must be a list for op in"),
        ("not_in", 3, "must be a list for op not_in"),
        ("gte", True, "must be a number for op gte"),
        ("regex", 5, "must be a string for op regex"),
        ("max_length", -1, "must be a non-negative integer for op max_length"),
        ("max_length", 2.5, "must be a non-negative integer for op max_length"),
        ("exists", "yes", "must be true or false for op exists"),
        ("within", [], "must be a directory or a non-empty list of directories for op within"),
        (
            "within",
            ["relative/dir"],
            'directories for op within must be absolute or start with "~"',
        ),
        ("eq", None, "is required for op eq"),
    ],
)
def test_condition_values_are_checked_per_op(op: str, value: Any, message: str) -> None:
    condition = {"path": "args.x", "op": op, "value": value}
    found = errors_of({"version": "1", "tools": {"t": {"deny_if": [condition]}}})
    assert found == [f"/tools/t/deny_if/0/value: {message}"]


def test_max_must_be_an_integer_not_a_string() -> None:
    data = {"version": "1", "all_tools": {"limits": [{"counter": "c", "window": 1, "max": "10"}]}}
    assert errors_of(data) == ["/all_tools/limits/0/max: must be an integer"]


def test_not_an_object_and_bad_json() -> None:
    assert errors_of([1, 2]) == ["/: must be a JSON object"]
    with pytest.raises(PolicyValidationError) as info:
        parse_policy_text('{"version": "1",', "p.json")
    assert str(info.value.errors[0]).startswith("/: invalid JSON: ")
    assert "p.json" in str(info.value)
    with pytest.raises(PolicyValidationError, match="duplicate key 'tools'"):
        parse_policy_text('{"version": "1", "tools": {}, "tools": {"x": {}}}')


def test_unknown_tools_lists_typos() -> None:
    policy = load_policy({"version": "1", "hide": ["*", "llm_job_lst"], "tools": {"codex": {}}})
    assert policy.unknown_tools(["codex", "llm_job_list"]) == ["llm_job_lst"]

"""``llmgw policy check`` and ``llmgw policy explain``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmgw_jupyter.policy_cli import main, register


def write(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return str(path)


POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "codex_request": {"action": "deny", "reason": "use the async tool"},
        "codex_request_async": {
            "deny_if": [{"path": "args.sandbox", "op": "eq", "value": "danger-full-access"}],
            "limits": [{"counter": "rate", "window": "minute", "max": 2}],
        },
        "codex_fork_session": {"action": "require_approval", "approval": {"timeout": "10m"}},
    },
}


def test_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", write(tmp_path, POLICY)]) == 0
    assert capsys.readouterr().out == "OK\n"


def test_check_warns_about_tools_the_gateway_does_not_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = {"version": "1", "default": "deny", "tools": {"codex_requst_async": {}}}
    assert main(["policy", "check", write(tmp_path, typo)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "OK\n"
    assert "/tools/codex_requst_async: no such tool" in captured.err


def test_check_lists_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = {
        "version": "1",
        "tools": {
            "codex_request_async": {"limits": [{"counter": "c", "window": "week", "max": 0}]}
        },
    }
    assert main(["policy", "check", write(tmp_path, bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "/tools/codex_request_async/limits/0/window: must be second, minute, hour, day or a "
        "positive number of seconds",
        "/tools/codex_request_async/limits/0/max: must be >= 1",
    ]


def test_check_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(tmp_path / "nope.json")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_explain_denial_prints_the_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, POLICY)
    assert main(["policy", "explain", path, "codex_request", "--args", '{"prompt": "x"}']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "caller: owner",
        "decision: deny",
        "rule: /tools/codex_request/action",
        'rule text: "deny"',
        "reason: use the async tool",
    ]


def test_explain_condition_and_grant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, POLICY)
    args = '{"sandbox": "danger-full-access"}'
    assert (
        main(["policy", "explain", path, "codex_request_async", "--args", args, "--grant", "ci"])
        == 0
    )
    out = capsys.readouterr().out
    assert "caller: grant:ci" in out
    assert "rule: /tools/codex_request_async/deny_if/0" in out
    assert '"op": "eq"' in out


def test_explain_repeat_shows_the_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, POLICY)
    assert main(["policy", "explain", path, "codex_request_async", "--repeat", "3"]) == 0
    out = capsys.readouterr().out
    assert "call 1: allow" in out and "call 2: allow" in out
    assert "call 3: deny (/tools/codex_request_async/limits/0)" in out
    assert "retry_after_seconds: 60.000" in out
    # A fresh run starts from zero: explain never consumes real counters.
    assert main(["policy", "explain", path, "codex_request_async"]) == 0
    assert "decision: allow" in capsys.readouterr().out


BUDGETS = {
    "version": "1",
    "default": "allow",
    "all_tools": {
        "limits": [{"counter": "spend", "window": "day", "max": 2, "measure": "cost_usd"}]
    },
    "tools": {
        "claude_request_async": {
            "limits": [{"counter": "tok", "window": "hour", "max": 1000, "measure": "tokens"}]
        }
    },
}


def test_check_and_explain_know_budgets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BUDGETS)
    assert main(["policy", "check", path]) == 0
    assert main(["policy", "explain", path, "claude_request_async"]) == 0
    out = capsys.readouterr().out
    assert "decision: allow" in out
    assert (
        "charged to: spend: at most 2 USD per day per caller; "
        "tok: at most 1,000 tokens per hour per caller"
    ) in out
    # What the caller already used: over the money budget, the job is refused.
    argv = ["policy", "explain", path, "claude_request_async", "--grant", "a"]
    assert main([*argv, "--used-usd", "2.5"]) == 0
    out = capsys.readouterr().out
    assert "decision: deny" in out and "rule: /all_tools/limits/0" in out
    assert "used 2.5 USD of 2 USD" in out and "retry_after_seconds: 86400.000" in out
    # Reading a job never meets a budget.
    assert main(["policy", "explain", path, "llm_job_status", "--used-usd", "9"]) == 0
    out = capsys.readouterr().out
    assert "decision: allow" in out and "charged to" not in out


def test_check_names_a_bad_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = {"version": "1", "all_tools": {"limits": [
        {"counter": "s", "window": "day", "max": 1.5, "measure": "tokens"}
    ]}}  # fmt: skip
    assert main(["policy", "check", write(tmp_path, bad)]) == 1
    assert "/all_tools/limits/0/max: must be an integer" in capsys.readouterr().err


def test_explain_approval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", write(tmp_path, POLICY), "codex_fork_session"]) == 0
    out = capsys.readouterr().out
    assert "decision: require_approval" in out and "approval_timeout_seconds: 600" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--args", "[1]"], "must be a JSON object"),
        (["--args", "{"], "invalid JSON"),
        (["--repeat", "0"], "at least 1"),
    ],
)
def test_explain_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["policy", "explain", write(tmp_path, POLICY), "codex_request", *extra]) == 1
    assert message in capsys.readouterr().err


def test_register_plugs_into_a_parent_parser(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="llmgw")
    register(parser.add_subparsers(dest="command"))
    namespace = parser.parse_args(["policy", "check", write(tmp_path, POLICY)])
    assert callable(namespace.func)


def test_module_entry_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmgw_jupyter.policy_cli",
            "policy",
            "check",
            write(tmp_path, POLICY),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "OK\n")

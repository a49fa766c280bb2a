"""The ``llmgw`` command, run as a subprocess: grant create/list/revoke against a data dir (also
while a gateway serves from it) and the exit codes of ``policy check``.

Exit codes: 0 success, 1 a policy file that does not validate, 2 a usage or input error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tools.gateway_harness import Harness, open_gateway

from llmgw_jupyter.grants import TOKEN_PREFIX
from llmgw_jupyter.tools import Caller

LLMGW = Path(sys.executable).with_name("llmgw")
POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {"codex_request_async": {}, "llm_job_status": {}},
}


def llmgw(*args: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``llmgw`` script with a private HOME and no inherited data dir."""
    env = {k: v for k, v in os.environ.items() if k not in ("LLMGW_DATA_DIR", "JUPYTER_DATA_DIR")}
    env["HOME"] = str(home)
    return subprocess.run(
        [str(LLMGW), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def token_of(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[0].endswith("created; its token (shown once, store it now):")
    assert lines[1].startswith(TOKEN_PREFIX)
    return lines[1]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "not-yet-created"


def test_the_script_is_installed() -> None:
    assert LLMGW.is_file() and os.access(LLMGW, os.X_OK)


def test_grant_create_list_and_revoke(tmp_path: Path, data_dir: Path) -> None:
    policy = write_json(tmp_path / "policy.json", POLICY)
    created = llmgw(
        "grant", "--data-dir", data_dir, "create", "ci", "--policy", policy, home=tmp_path
    )
    assert created.returncode == 0, created.stderr
    assert created.stderr == ""
    token_of(created)
    bare = llmgw("grant", "--data-dir", data_dir, "create", "bare", home=tmp_path)
    assert bare.returncode == 0, bare.stderr
    assert "no --policy given: this grant is refused every tool" in bare.stderr

    listed = llmgw("grant", "--data-dir", data_dir, "list", home=tmp_path)
    assert listed.returncode == 0
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("ci", "active", "tools: ['codex_request_async', 'llm_job_status']"),
        ("bare", "active", "tools: no policy"),
    ]
    for secret in (token_of(created), token_of(bare)):
        assert secret not in listed.stdout

    revoked = llmgw("grant", "--data-dir", data_dir, "revoke", "ci", home=tmp_path)
    assert (revoked.returncode, revoked.stdout) == (0, "grant ci revoked\n")
    after = llmgw("grant", "--data-dir", data_dir, "list", home=tmp_path)
    first = after.stdout.splitlines()[0].split("\t")
    assert first[0] == "ci" and first[1].startswith("revoked ")


def test_grant_errors_exit_2_with_a_message(tmp_path: Path, data_dir: Path) -> None:
    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return llmgw("grant", "--data-dir", data_dir, *args, home=tmp_path)

    assert run("create", "agent").returncode == 0
    cases: list[tuple[tuple[str | Path, ...], str]] = [
        (("create", "agent"), "llmgw: grant 'agent' already exists"),
        (("create", "a/b"), "llmgw: name: must be 1-64 lowercase letters"),
        (("create", "Agent"), "llmgw: name: must be 1-64 lowercase letters"),  # case-folding FS
        (("revoke", "nobody"), "llmgw: grant 'nobody' not found"),
        (
            ("create", "x1", "--policy", tmp_path / "missing.json"),
            "llmgw: [Errno 2] No such file or directory",
        ),
        (
            ("create", "x2", "--policy", write_json(tmp_path / "broken.json", "{")),
            "llmgw: Expecting property name",
        ),
        (
            ("create", "x3", "--policy", write_json(tmp_path / "list.json", [1, 2])),
            "llmgw: policy: must be a JSON object",
        ),
        (
            ("create", "x4", "--policy", write_json(tmp_path / "v2.json", {"version": "2"})),
            "llmgw: grant x4: invalid policy: /version:",
        ),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith(message), (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stdout == "", args
    listed = run("list").stdout.splitlines()
    assert [line.split("\t")[0] for line in listed] == ["agent"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    for args in ((), ("grant",), ("grant", "create"), ("policy", "check"), ("nonsense",)):
        result = llmgw(*args, home=tmp_path)
        assert result.returncode == 2, args
        assert "usage: llmgw" in result.stderr


def test_policy_check_exit_codes(tmp_path: Path) -> None:
    good = write_json(tmp_path / "good.json", POLICY)
    ok = llmgw("policy", "check", good, home=tmp_path)
    assert (ok.returncode, ok.stdout) == (0, "OK\n")

    bad = write_json(
        tmp_path / "bad.json",
        {
            "version": "1",
            "tools": {
                "codex_request_async": {
                    "limits": [{"counter": "c", "window": "fortnight", "max": 1}]
                }
            },
        },
    )
    refused = llmgw("policy", "check", bad, home=tmp_path)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr == (
        "/tools/codex_request_async/limits/0/window: must be second, minute, hour, day or a "
        "positive number of seconds\n"
    )
    missing = llmgw("policy", "check", tmp_path / "nope.json", home=tmp_path)
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr


@pytest.fixture
async def serving(tmp_path: Path) -> AsyncIterator[Harness]:
    """A gateway serving from ``tmp_path/data`` while the command works on the same store."""
    async with open_gateway(tmp_path, fake=True) as harness:
        yield harness


async def test_grants_made_by_the_command_work_on_a_running_gateway(
    serving: Harness, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    policy = write_json(tmp_path / "policy.json", POLICY)
    created = llmgw(
        "grant", "--data-dir", data_dir, "create", "ext", "--policy", policy, home=tmp_path
    )
    assert created.returncode == 0, created.stderr
    token = token_of(created)

    agent = serving.gateway.caller_for_token(token)
    assert agent == Caller.grant("ext")
    tools = [t.name for t in serving.gateway.list_tools(agent)]
    assert tools == ["codex_request_async", "llm_job_status"]
    submitted = await serving.ok("codex_request_async", {"prompt": "from an agent"}, agent)
    assert submitted["job"]["caller"] == "grant:ext"

    revoked = llmgw("grant", "--data-dir", data_dir, "revoke", "ext", home=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    assert serving.gateway.caller_for_token(token) is None  # at the very next request
    refused = await serving.call("llm_job_status", {"job_id": submitted["job"]["id"]}, agent)
    assert refused.text.startswith("[POLICY DENIED] no policy for this caller")

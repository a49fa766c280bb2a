"""The Codex provider: argument validation, command lines (accepted by the real CLI), finding
the executable, and parsing the ``--json`` stream."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from llmgw_jupyter.errors import ErrorCategory, GatewayError
from llmgw_jupyter.providers.base import LaunchContext
from llmgw_jupyter.providers.codex import (
    CODEX_PATH_ENV,
    GATEWAY_CONFIG,
    CodexArgs,
    CodexProvider,
    CodexStreamParser,
    find_codex,
)
from llmgw_jupyter.testing.mock_responses import MockResponsesServer

CODEX_WAIT = 60


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        value = {"type": "object", "properties": {"x": value}}
    return value


DEEP = _nested(40)  # a 20 MB schema once made the owner's job list 21 MB; depth is capped too


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def provider(tmp_path: Path) -> CodexProvider:
    return CodexProvider(str(executable(tmp_path / "bin" / "codex")), codex_home="/codex-home")


def owner(tmp_path: Path) -> LaunchContext:
    return LaunchContext(caller="owner", isolated=False, state_dir=tmp_path / "state")


GATEWAY_SETTINGS = [item for setting in GATEWAY_CONFIG for item in ("-c", setting)]


def lines(*events: dict[str, Any]) -> list[bytes]:
    return [json.dumps(e).encode() for e in events]


def feed_all(parser: CodexStreamParser, raw: list[bytes]) -> list[str]:
    return [event.type for line in raw for event in parser.feed(line)]


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"prompt": "hi", "bogus": 1}, "bogus"),
        ({"prompt": "hi\x00"}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 100_001}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "hi", "working_dir": "-x"}, "working_dir"),
        ({"prompt": "hi", "add_dirs": ["--dangerously-bypass-approvals-and-sandbox"]}, "add_dirs"),
        ({"prompt": "hi", "model": "gpt 5; rm -rf /"}, "model"),
        ({"prompt": "hi", "model": "-m"}, "model"),
        ({"prompt": "hi", "sandbox": "yolo"}, "sandbox"),
        ({"prompt": "hi", "config_overrides": {"sandbox_mode": "danger-full-access"}},
         "config_overrides"),
        ({"prompt": "hi", "config_overrides": {"model_providers.x.base_url": "http://evil"}},
         "config_overrides"),
        ({"prompt": "hi", "config_overrides": {"a=b": 1}}, "config_overrides"),
        ({"prompt": "hi", "config_overrides": {"k": "v\x00"}}, "config_overrides"),
        ({"prompt": "hi", "timeout_seconds": 0}, "timeout_seconds"),
        ({"prompt": "hi", "output_schema": {"description": "x" * 70_000}}, "output_schema"),
        ({"prompt": "hi", "output_schema": DEEP}, "output_schema"),
        ({"prompt": "hi", "config_overrides": {"model_verbosity": "v" * 1001}},
         "config_overrides"),
        ({"prompt": "hi", "config_overrides": {"model_verbosity": ["v"] * 33}},
         "config_overrides"),
        ({"prompt": "hi", "config_overrides": {f"k{n}": 1 for n in range(33)}},
         "config_overrides"),
        ({"prompt": "hi", "add_dirs": ["/tmp"] * 17}, "add_dirs"),
    ],
)  # fmt: skip
def test_invalid_arguments_name_the_field(
    provider: CodexProvider, args: dict[str, Any], field: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        provider.validate("exec", args)
    assert caught.value.category is ErrorCategory.INVALID_INPUT
    assert caught.value.field == field
    assert caught.value.message.startswith(field)


@pytest.mark.parametrize("session_id", ["-rf", "", "a b", "x" * 200, "../../etc"])
def test_fork_and_resume_need_a_safe_session_id(provider: CodexProvider, session_id: str) -> None:
    for kind in ("fork", "resume"):
        with pytest.raises(GatewayError) as caught:
            provider.validate(kind, {"prompt": "hi", "session_id": session_id})
        assert caught.value.field == "session_id"


def test_every_bad_field_is_reported_at_once(provider: CodexProvider) -> None:
    with pytest.raises(GatewayError) as caught:
        provider.validate("exec", {"prompt": "", "model": "bad model", "color": "red"})
    for field in ("prompt", "model", "color"):
        assert field in caught.value.message


def test_a_working_dir_must_exist_and_is_resolved(provider: CodexProvider, tmp_path: Path) -> None:
    with pytest.raises(GatewayError) as caught:
        provider.validate("exec", {"prompt": "hi", "working_dir": str(tmp_path / "missing")})
    assert caught.value.field == "working_dir"

    (tmp_path / "real").mkdir()
    roundabout = str(tmp_path / "real" / ".." / "real")
    args = provider.validate("exec", {"prompt": "hi", "working_dir": roundabout})
    assert args["working_dir"] == str((tmp_path / "real").resolve())
    assert args["sandbox"] == "read-only"  # the safe default is explicit in the stored args


# -- command lines ---------------------------------------------------------------------------


def test_exec_command_puts_the_prompt_on_stdin_after_an_option_terminator(
    provider: CodexProvider, tmp_path: Path
) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "extra").mkdir()
    args = provider.validate(
        "exec",
        {
            "prompt": "--help me; $(rm -rf ~)",
            "model": "gpt-5.5",
            "sandbox": "workspace-write",
            "working_dir": str(tmp_path / "work"),
            "add_dirs": [str(tmp_path / "extra")],
            "config_overrides": {"model_reasoning_effort": "low", "model_verbosity": "low"},
            "output_schema": {"type": "object"},
        },
    )
    job_dir = tmp_path / "job"
    job_dir.mkdir()

    command = provider.build_command("exec", args, job_dir, owner(tmp_path))

    assert command.argv == [
        provider.executable(), "exec", "--json", "--skip-git-repo-check",
        "--model", "gpt-5.5",
        "-c", 'model_reasoning_effort="low"', "-c", 'model_verbosity="low"',
        "--sandbox", "workspace-write",
        "-C", str(tmp_path / "work"), "--add-dir", str(tmp_path / "extra"),
        "-c", 'sandbox_mode="workspace-write"',
        "-c", f'sandbox_workspace_write.writable_roots=["{tmp_path / "extra"}"]',
        *GATEWAY_SETTINGS,
        "--output-schema", str(job_dir / "output_schema.json"),
        "--", "-",
    ]  # fmt: skip
    assert command.stdin == b"--help me; $(rm -rf ~)"
    assert command.cwd == str(tmp_path / "work")
    assert command.env == {"CODEX_HOME": "/codex-home"}
    assert json.loads((job_dir / "output_schema.json").read_text()) == {"type": "object"}


@pytest.mark.parametrize("kind", ["fork", "resume"])
def test_fork_and_resume_pass_sandbox_as_config_and_the_session_last(
    provider: CodexProvider, tmp_path: Path, kind: str
) -> None:
    (tmp_path / "extra").mkdir()
    args = provider.validate(
        kind,
        {
            "prompt": "go on",
            "session_id": "01a1fd8b-40ef-75f0-a90e-545a02dcc899",
            "working_dir": str(tmp_path),
            "add_dirs": [str(tmp_path / "extra")],
        },
    )

    command = provider.build_command(kind, args, tmp_path, owner(tmp_path))

    assert command.argv == [
        provider.executable(), "exec", kind, "--json", "--skip-git-repo-check",
        "-c", 'sandbox_mode="read-only"',
        "-c", f'sandbox_workspace_write.writable_roots=["{tmp_path / "extra"}"]',
        *GATEWAY_SETTINGS,
        "--", "01a1fd8b-40ef-75f0-a90e-545a02dcc899", "-",
    ]  # fmt: skip
    assert command.cwd == str(tmp_path)  # fork/resume take no -C: the process runs there


def test_the_real_cli_accepts_every_option_the_provider_builds(
    codex_path: str, codex_env: dict[str, str], mock_model: MockResponsesServer, tmp_path: Path
) -> None:
    """Options Codex would reject fail here, not in a user's job."""
    real = CodexProvider(codex_path)
    for name in ("work", "extra", "job"):
        (tmp_path / name).mkdir()
    args = real.validate(
        "exec",
        {
            "prompt": "first",
            "model": "gpt-5.5",
            "sandbox": "workspace-write",
            "working_dir": str(tmp_path / "work"),
            "add_dirs": [str(tmp_path / "extra")],
            "config_overrides": {"model_reasoning_effort": "low"},
            "output_schema": {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
                "additionalProperties": False,
            },
        },
    )
    first = run_command(
        real.build_command("exec", args, tmp_path / "job", owner(tmp_path)), codex_env
    )
    [thread] = [e["thread_id"] for e in first if e["type"] == "thread.started"]
    assert first[-1]["type"] == "turn.completed"
    assert mock_model.requests[-1].body["text"]["format"]["type"] == "json_schema"

    for kind in ("fork", "resume"):
        more = real.validate(
            kind,
            {
                "prompt": kind,
                "session_id": thread,
                "working_dir": str(tmp_path / "work"),
                "sandbox": "workspace-write",
                "add_dirs": [str(tmp_path / "extra")],
                "config_overrides": {"model_reasoning_effort": "low"},
            },
        )
        events = run_command(
            real.build_command(kind, more, tmp_path / "job", owner(tmp_path)), codex_env
        )
        assert events[-1]["type"] == "turn.completed", events
        assert mock_model.requests[-1].last_user_text == kind


def run_command(command: Any, env: dict[str, str]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        command.argv,
        input=command.stdin,
        capture_output=True,
        cwd=command.cwd,
        env={**env, **command.env},
        timeout=CODEX_WAIT,
        start_new_session=True,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return [json.loads(x) for x in proc.stdout.decode().splitlines() if x.startswith("{")]


# -- finding the executable ------------------------------------------------------------------


def test_codex_is_found_from_configuration_then_environment_then_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured = executable(tmp_path / "configured" / "codex")
    from_env = executable(tmp_path / "env" / "codex")
    on_path = executable(tmp_path / "path" / "codex")
    monkeypatch.setenv("PATH", str(on_path.parent))
    monkeypatch.setenv(CODEX_PATH_ENV, str(from_env))

    assert find_codex(str(configured)) == str(configured)
    assert find_codex(None) == str(from_env)
    monkeypatch.delenv(CODEX_PATH_ENV)
    assert find_codex(None) == str(on_path)


@pytest.mark.parametrize("where", ["configuration", "environment", "nowhere"])
def test_a_missing_codex_says_where_it_looked_and_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv(CODEX_PATH_ENV, raising=False)
    missing = str(tmp_path / "no" / "codex")
    if where == "environment":
        monkeypatch.setenv(CODEX_PATH_ENV, missing)

    with pytest.raises(GatewayError) as caught:
        CodexProvider(missing if where == "configuration" else None).check_ready()

    message = caught.value.message
    assert caught.value.category is ErrorCategory.SPAWN_ERROR
    assert "npm install --prefix .codex-cli @openai/codex@0.169.0" in message
    assert CODEX_PATH_ENV in message
    if where != "nowhere":
        assert missing in message


def test_a_non_executable_file_is_not_taken_for_codex(tmp_path: Path) -> None:
    plain = tmp_path / "codex"
    plain.write_text("not a program")
    with pytest.raises(GatewayError):
        find_codex(str(plain))
    assert os.access(executable(plain), os.X_OK) and find_codex(str(plain)) == str(plain)


# -- the JSONL stream ------------------------------------------------------------------------

SUCCESS = lines(
    {"type": "thread.started", "thread_id": "t-1"},
    {"type": "turn.started"},
    {"type": "item.completed", "item": {"id": "r", "type": "reasoning", "text": "thinking"}},
    {"type": "item.completed", "item": {"id": "a", "type": "agent_message", "text": "draft"}},
    {"type": "item.started", "item": {"id": "c", "type": "command_execution", "command": "ls",
                                      "status": "in_progress"}},
    {"type": "item.completed", "item": {"id": "c", "type": "command_execution", "command": "ls",
                                        "status": "completed", "exit_code": 0}},
    {"type": "item.completed", "item": {"id": "f", "type": "file_change",
                                        "changes": [{"path": "a.py", "kind": "add"}]}},
    {"type": "item.completed", "item": {"id": "b", "type": "agent_message", "text": "final"}},
    {"type": "turn.completed", "usage": {"input_tokens": 100, "cached_input_tokens": 40,
                                         "output_tokens": 7, "reasoning_output_tokens": 3}},
)  # fmt: skip


def test_a_completed_turn_gives_session_last_message_and_usage() -> None:
    parser = CodexStreamParser()
    types = feed_all(parser, SUCCESS)

    assert types[0] == "thread.started" and types[-1] == "turn.completed" and len(types) == 9
    assert parser.session_id == "t-1"
    assert parser.final_message == "final"  # the last agent message, not the first
    assert parser.usage is not None
    assert parser.usage.to_dict() == {
        "input_tokens": 100, "cached_input_tokens": 40,
        "output_tokens": 7, "reasoning_output_tokens": 3, "cost_usd": None,
    }  # fmt: skip
    assert parser.verdict(0, "").succeeded


def test_event_summaries_say_what_happened() -> None:
    parser = CodexStreamParser()
    summaries = [e.summary for line in SUCCESS for e in parser.feed(line)]
    assert summaries[0] == "session t-1"
    assert "reasoning: thinking" in summaries
    assert "command completed: ls (exit 0)" in summaries
    assert "files changed: add a.py" in summaries
    assert summaries[-1] == "turn completed · 100 in / 7 out tokens"


def test_success_needs_both_turn_completed_and_exit_zero() -> None:
    no_turn = CodexStreamParser()
    feed_all(no_turn, SUCCESS[:-1])
    verdict = no_turn.verdict(0, "")
    assert not verdict.succeeded and verdict.category is ErrorCategory.CLI_ERROR
    assert verdict.message is not None and "turn.completed" in verdict.message

    bad_exit = CodexStreamParser()
    feed_all(bad_exit, SUCCESS)
    assert not bad_exit.verdict(1, "").succeeded
    assert not bad_exit.verdict(None, "").succeeded  # killed: no exit code


def test_reconnecting_notices_are_not_failures() -> None:
    parser = CodexStreamParser()
    feed_all(
        parser,
        lines(
            {"type": "thread.started", "thread_id": "t"},
            {"type": "error", "message": "Reconnecting... 1/5 (stream disconnected)"},
            {"type": "turn.completed", "usage": {}},
        ),
    )
    assert parser.error_message is None
    assert parser.verdict(0, "").succeeded


def test_turn_failed_gives_the_message_and_auth_failures_their_category() -> None:
    parser = CodexStreamParser()
    feed_all(
        parser,
        lines(
            {"type": "error", "message": "unexpected status 401 Unauthorized: bad key"},
            {"type": "turn.failed",
             "error": {"message": "unexpected status 401 Unauthorized: bad key"}},
        ),
    )  # fmt: skip
    verdict = parser.verdict(1, "")
    assert verdict.category is ErrorCategory.AUTH_ERROR
    assert verdict.message == "unexpected status 401 Unauthorized: bad key"

    server = CodexStreamParser()
    feed_all(server, lines({"type": "turn.failed", "error": {"message": "high demand"}}))
    assert server.verdict(1, "").category is ErrorCategory.CLI_ERROR


def test_a_crash_without_events_reports_the_exit_code_and_stderr_tail() -> None:
    verdict = CodexStreamParser().verdict(101, "noise\nthread 'main' panicked\nat src/x.rs\n")
    assert verdict.message == "codex exited with code 101: noise thread 'main' panicked at src/x.rs"


def test_lines_that_are_not_json_events_are_ignored() -> None:
    parser = CodexStreamParser()
    for junk in (b"", b"Reading additional input from stdin...", b"{not json", b"[1, 2]",
                 b'{"no": "type"}', b'{"type": 3}'):  # fmt: skip
        assert parser.feed(junk) == []
    assert parser.feed(b'  {"type": "turn.started"}\r') != []


def test_stored_event_data_is_clipped_but_the_answer_is_not() -> None:
    parser = CodexStreamParser()
    text = "z" * 50_000
    [event] = parser.feed(
        json.dumps(
            {"type": "item.completed", "item": {"type": "agent_message", "text": text}}
        ).encode()
    )
    assert parser.final_message == text
    assert len(event.data["item"]["text"]) < 5_000 and "more]" in event.data["item"]["text"]
    assert len(event.summary) <= 300


def test_codex_args_schema_documents_every_field() -> None:
    schema = CodexArgs.model_json_schema()
    assert schema["required"] == ["prompt"]
    assert all("description" in spec for spec in schema["properties"].values())


def test_a_relative_codex_home_is_made_absolute_before_jobs_run_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main command once handed over ``.llmgw-demo/codex-home``; jobs ran in notebooks/."""
    monkeypatch.chdir(tmp_path)
    provider = CodexProvider(str(executable(tmp_path / "bin" / "codex")), codex_home="demo/home")
    (tmp_path / "work").mkdir()
    args = provider.validate("exec", {"prompt": "hi", "working_dir": str(tmp_path / "work")})
    command = provider.build_command("exec", args, tmp_path, owner(tmp_path))
    assert command.env["CODEX_HOME"] == str(tmp_path / "demo" / "home")

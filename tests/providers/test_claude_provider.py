"""The Claude Code provider without running it: command lines, validation and refusals, the
gateway-owned settings, and the parser fed the real stream-json captures of 2.1.328."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from llmgw_jupyter.errors import ErrorCategory, ExecutableNotFoundError, GatewayError
from llmgw_jupyter.providers.base import LaunchContext, ProviderConfigError, ProviderSettings
from llmgw_jupyter.providers.claude import (
    CLAUDE_PATH_ENV,
    INSIDE_CONFIG_DIR,
    KEY_FILE,
    ClaudeProvider,
    ClaudeStreamParser,
    find_claude,
)
from llmgw_jupyter.providers.registry import build_providers

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude"
INDEX: dict[str, dict[str, Any]] = json.loads((FIXTURES / "index.json").read_text())
SESSION = "b19303d2-a661-4198-915e-15820e648e75"
GATEWAY_TAIL = [
    "--permission-mode", "default", "--setting-sources", "user", "--strict-mcp-config", "--",
]  # fmt: skip


@pytest.fixture
def fake_claude(tmp_path: Path) -> str:
    path = tmp_path / "bin" / "claude"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def provider(fake_claude: str) -> ClaudeProvider:
    return ClaudeProvider(fake_claude, base_url="http://127.0.0.1:9999")


def context(tmp_path: Path, caller: str = "grant:bot", isolated: bool = True) -> LaunchContext:
    state = tmp_path / "state" / caller.replace(":", "-")
    state.mkdir(parents=True, exist_ok=True)
    return LaunchContext(caller=caller, isolated=isolated, state_dir=state)


def build(
    provider: ClaudeProvider, tmp_path: Path, kind: str = "exec", **args: Any
) -> tuple[list[str], Any]:
    values = provider.validate(kind, {"prompt": "hi", **args})
    command = provider.build_command(kind, values, tmp_path, context(tmp_path))
    return command.argv[1:], command


# -- command lines -----------------------------------------------------------------------------


def test_exec_argv_has_headless_stream_json_then_the_gateways_settings_last(
    provider: ClaudeProvider, tmp_path: Path
) -> None:
    argv, command = build(provider, tmp_path, working_dir=str(tmp_path))
    assert argv == ["-p", "--output-format", "stream-json", "--verbose", *GATEWAY_TAIL]
    assert command.stdin == b"hi" and command.cwd == str(tmp_path.resolve())


def test_every_option_becomes_its_flag_and_resume_and_fork_name_the_session(
    provider: ClaudeProvider, tmp_path: Path
) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    argv, _ = build(
        provider,
        tmp_path,
        "fork",
        session_id=SESSION.upper(),
        model="claude-sonnet-4-5",
        max_turns=3,
        allowed_tools=["Bash(git log *)", "Read"],
        disallowed_tools=["WebFetch"],
        add_dirs=[str(extra)],
        output_schema=schema,
        permission_mode="acceptEdits",
    )
    assert argv == [
        "-p", "--output-format", "stream-json", "--verbose",
        "--model", "claude-sonnet-4-5", "--max-turns", "3",
        "--allowedTools", "Bash(git log *)", "Read", "--disallowedTools", "WebFetch",
        "--add-dir", str(extra.resolve()),
        "--json-schema", json.dumps(schema, separators=(",", ":")),
        "--resume", SESSION, "--fork-session",  # the UUID in its canonical lower-case form
        "--permission-mode", "acceptEdits", "--setting-sources", "user", "--strict-mcp-config",
        "--",
    ]  # fmt: skip
    resume, _ = build(provider, tmp_path, "resume", session_id=SESSION)
    assert resume[-8:-6] == ["--resume", SESSION] and "--fork-session" not in resume


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("permission_mode", "bypassPermissions", "permission_mode"),
        ("permission_mode", "dangerously-skip", "permission_mode"),
        ("allowed_tools", ["Bash,Write"], "not a tool name"),
        ("allowed_tools", ["Bash(echo) Write"], "not a tool name"),
        ("allowed_tools", ["--settings"], "not a tool name"),
        ("allowed_tools", ["Bash(a(b))"], "not a tool name"),
        ("disallowed_tools", ["Bash\nWrite"], "not a tool name"),
        ("allowed_tools", ["Read"] * 33, "at most 32"),
        ("model", "--settings=/x", "model"),
        ("max_turns", 0, "greater than or equal to 1"),
        ("add_dirs", ["--mcp-config"], "must not start with '-'"),
        ("prompt", "   ", "blank"),
        ("settings", "{}", "unknown field"),
        ("mcp_config", "{}", "unknown field"),
        ("env", {"ANTHROPIC_BASE_URL": "http://evil"}, "unknown field"),
        ("dangerously_skip_permissions", True, "unknown field"),
    ],
)
def test_refusals_name_the_field(
    provider: ClaudeProvider, field: str, value: Any, rule: str
) -> None:
    args = {"prompt": "hi", field: value}
    with pytest.raises(GatewayError) as refused:
        provider.validate("exec", args)
    assert refused.value.field == field
    assert refused.value.category is ErrorCategory.INVALID_INPUT
    assert rule.lower() in refused.value.message.lower(), refused.value.message


@pytest.mark.parametrize(
    "session_id", ["not-a-uuid", "my session title", "-x", f"{SESSION}x", SESSION.replace("-", "")]
)
def test_session_ids_must_be_uuids(provider: ClaudeProvider, session_id: str) -> None:
    with pytest.raises(GatewayError) as refused:
        provider.validate("resume", {"prompt": "hi", "session_id": session_id})
    assert refused.value.field == "session_id"
    assert "UUID" in refused.value.message


def test_a_stored_bad_argument_is_refused_again_at_launch(
    provider: ClaudeProvider, tmp_path: Path
) -> None:
    with pytest.raises(GatewayError) as refused:
        provider.build_command(
            "exec", {"prompt": "hi", "permission_mode": "bypassPermissions"}, tmp_path,
            context(tmp_path),
        )  # fmt: skip
    assert refused.value.field == "permission_mode"


def test_the_environment_is_the_gateways_and_the_key_travels_in_a_private_file(
    provider: ClaudeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-owner")
    _, command = build(provider, tmp_path)
    assert command.env == {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9999",
        "CLAUDE_CONFIG_DIR": INSIDE_CONFIG_DIR,
        "CLAUDE_CODE_TMPDIR": "/tmp/claude",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    assert "ANTHROPIC_API_KEY" not in command.env_names  # never in claude's environment
    config = Path(command.mounts.private[INSIDE_CONFIG_DIR])
    assert config == tmp_path / "state" / "grant-bot" / "claude-config"
    key_file = config / KEY_FILE
    assert key_file.read_text() == "sk-ant-owner\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.stat().st_mode) == 0o700
    settings = json.loads((config / "settings.json").read_text())
    inside_key = f"{INSIDE_CONFIG_DIR}/{KEY_FILE}"
    assert settings["apiKeyHelper"] == f"cat {inside_key}"
    assert settings["disableAllHooks"] is True
    sandbox = settings["sandbox"]
    assert sandbox["enabled"] is True and sandbox["allowUnsandboxedCommands"] is False
    assert sandbox["autoAllowBashIfSandboxed"] is False
    assert sandbox["enableWeakerNestedSandbox"] is True  # inside the boundary only
    assert sandbox["filesystem"]["denyRead"] == [inside_key]
    assert sandbox["credentials"]["envVars"] == [{"name": "ANTHROPIC_API_KEY", "mode": "deny"}]


def test_settings_a_previous_run_wrote_are_replaced_and_no_key_means_no_helper(
    provider: ClaudeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    config = tmp_path / "state" / "owner" / "claude-config"
    config.mkdir(parents=True)
    (config / "settings.json").write_text(json.dumps({"hooks": {"x": []}, "env": {"A": "b"}}))
    (config / KEY_FILE).write_text("stale\n")
    values = provider.validate("exec", {"prompt": "hi"})
    command = provider.build_command(
        "exec", values, tmp_path, context(tmp_path, "owner", isolated=False)
    )
    settings = json.loads((config / "settings.json").read_text())
    assert "hooks" not in settings and "env" not in settings and "apiKeyHelper" not in settings
    assert not (config / KEY_FILE).exists()
    assert settings["sandbox"]["enableWeakerNestedSandbox"] is False  # a fresh /proc outside
    assert command.env["CLAUDE_CONFIG_DIR"] == str(config)
    assert command.mounts.private == {}
    assert len(command.env["CLAUDE_CODE_TMPDIR"]) < 60  # room for the CLI's Unix socket path


def test_settings_options_and_executable_lookup(
    fake_claude: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = ClaudeProvider.from_settings(
        ProviderSettings(path=fake_claude, options={"base_url": "http://127.0.0.1:1"})
    )
    assert built.executable() == fake_claude and built.base_url == "http://127.0.0.1:1"
    for options, setting in (
        ({"base_url": "file:///etc"}, "options.base_url"),
        ({"command_sandbox": "no"}, "options.command_sandbox"),
        ({"settings": "{}"}, "options.settings"),
    ):
        with pytest.raises(ProviderConfigError) as wrong:
            ClaudeProvider.from_settings(ProviderSettings(options=options))
        assert wrong.value.setting == setting
    monkeypatch.setenv(CLAUDE_PATH_ENV, fake_claude)
    assert find_claude() == fake_claude
    monkeypatch.setenv(CLAUDE_PATH_ENV, "/nonexistent/claude")
    with pytest.raises(ExecutableNotFoundError, match="LLMGW_CLAUDE_PATH"):
        find_claude()
    monkeypatch.delenv(CLAUDE_PATH_ENV)
    monkeypatch.setenv("PATH", str(Path(fake_claude).parent))
    assert find_claude() == fake_claude
    monkeypatch.setenv("PATH", os.devnull)
    with pytest.raises(ExecutableNotFoundError, match=r"npm install --prefix \.claude-cli"):
        find_claude()


def test_registered_under_its_name_with_uuid_session_ids() -> None:
    providers = build_providers()
    assert isinstance(providers["claude"], ClaudeProvider)
    spec = providers["claude"].tool_spec
    assert spec.label == "Claude" and spec.can_fork
    assert "permission_mode" in spec.light_arg_keys and "prompt" not in spec.light_arg_keys


# -- the parser, fed the real captures -----------------------------------------------------------


def parse(name: str) -> tuple[ClaudeStreamParser, list[Any]]:
    parser = ClaudeStreamParser()
    events = []
    for line in (FIXTURES / f"{name}.jsonl").read_bytes().splitlines():
        events += parser.feed(line)
    return parser, events


def lines(name: str) -> list[dict[str, Any]]:
    text = (FIXTURES / f"{name}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def result_of(name: str) -> dict[str, Any]:
    [result] = [e for e in lines(name) if e["type"] == "result"]
    return result


def test_success_gives_session_answer_usage_and_this_runs_cost() -> None:
    parser, events = parse("success")
    result = result_of("success")
    assert [e.type for e in events] == ["system.init", "assistant", "result.success"]
    assert parser.session_id == result["session_id"]
    assert parser.final_message == result["result"] == "echo: say hello"
    usage = result["usage"]
    cached = usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
    assert parser.usage is not None
    assert parser.usage.input_tokens == usage["input_tokens"] + cached
    assert parser.usage.cached_input_tokens == cached
    assert parser.usage.output_tokens == usage["output_tokens"]
    assert parser.cost_usd == pytest.approx(result["total_cost_usd"])  # a first run: the same
    assert parser.verdict(INDEX["success"]["exit_code"], "").succeeded


@pytest.mark.parametrize("name", ["resume", "fork"])
def test_resumed_and_forked_runs_cost_only_their_own_requests(name: str) -> None:
    parser, _ = parse(name)
    result = result_of(name)
    own = sum(m["costUSD"] for m in result["model_usage_since_last_result"].values())
    assert parser.cost_usd == pytest.approx(own)
    assert parser.usage is not None and parser.usage.cost_usd == parser.cost_usd
    assert parser.cost_usd < result["total_cost_usd"]  # the total includes the parent's runs
    assert parser.verdict(0, "").succeeded


def test_a_model_request_is_counted_once_however_many_blocks_it_has() -> None:
    parser = ClaudeStreamParser()
    events = lines("steps")
    for event in events[:-1]:  # three blocks of one message, before the result
        parser.feed(json.dumps(event).encode())
    first = events[1]["message"]["usage"]
    assert parser.usage is not None
    assert parser.usage.input_tokens == (first["input_tokens"] + first["cache_read_input_tokens"])
    parser.feed(json.dumps(events[-1]).encode())
    assert parser.usage.output_tokens == events[-1]["usage"]["output_tokens"]


def test_tool_use_and_permission_denials_are_progress_and_the_run_still_succeeds() -> None:
    _, events = parse("tool_use")
    summaries = [e.summary for e in events]
    assert any(s.startswith("tool Bash: ") for s in summaries)
    assert any(s.startswith("tool result: ") for s in summaries)
    parser, events = parse("permission_denied")
    assert any(e.type == "system.permission_denied" for e in events)
    assert parser.verdict(0, "").succeeded


@pytest.mark.parametrize(
    ("name", "category", "start"),
    [
        ("api_error_500", ErrorCategory.CLI_ERROR, "API Error: 500"),
        ("api_error_401", ErrorCategory.AUTH_ERROR, ""),
        ("max_turns", ErrorCategory.CLI_ERROR, "Reached maximum number of turns"),
        ("resume_unknown", ErrorCategory.CLI_ERROR, "No conversation found"),
    ],
)
def test_failures_carry_claudes_message(name: str, category: ErrorCategory, start: str) -> None:
    parser, _ = parse(name)
    verdict = parser.verdict(INDEX[name]["exit_code"], "")
    assert not verdict.succeeded
    assert verdict.category is category
    assert verdict.message and verdict.message.startswith(start), verdict.message
    assert parser.final_message is None


@pytest.mark.parametrize("name", ["sigterm_mid_run", "sigint_mid_run"])
def test_a_run_ended_by_a_signal_is_never_a_success(name: str) -> None:
    parser, _ = parse(name)
    exit_code = INDEX[name]["exit_code"]
    assert not parser.verdict(exit_code, "").succeeded


def test_structured_output_succeeds_only_with_an_object() -> None:
    parser, _ = parse("structured_output")
    assert parser.expects_structured and parser.structured_output == {"answer": "forty-two"}
    assert parser.verdict(0, "").succeeded
    events = lines("structured_output")
    events[-1] = {**events[-1], "structured_output": None}
    parser = ClaudeStreamParser()
    for event in events:
        parser.feed(json.dumps(event).encode())
    verdict = parser.verdict(0, "")
    assert not verdict.succeeded and "output_schema" in (verdict.message or "")


def test_garbage_and_a_missing_result_fail_with_the_stderr_tail() -> None:
    parser = ClaudeStreamParser()
    assert parser.feed(b"not json") == [] and parser.feed(b"{broken") == []
    assert parser.feed(b'{"no_type": 1}') == []
    verdict = parser.verdict(1, "error: option '--permission-mode <mode>' argument invalid\n")
    assert not verdict.succeeded
    assert verdict.message is not None and "argument invalid" in verdict.message


# -- private files ---------------------------------------------------------------------------
def test_private_files_are_rewritten_only_when_they_differ(tmp_path: Path) -> None:
    """An unchanged 0600 file is left alone (no truncating rewrite per job); other content, a
    wider mode or a symlink planted by a job is replaced by the gateway's content, 0600."""
    from llmgw_jupyter.providers.claude import write_private

    target = tmp_path / "settings.json"
    write_private(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}' and (target.stat().st_mode & 0o777) == 0o600
    before = target.stat().st_mtime_ns, target.stat().st_ino
    os.utime(target, ns=(1, 1))
    write_private(target, '{"a": 1}')
    assert target.stat().st_mtime_ns == 1 and target.stat().st_ino == before[1]  # untouched

    target.write_text('{"hooks": "evil"}')
    write_private(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    target.chmod(0o644)
    write_private(target, '{"a": 1}')
    assert (target.stat().st_mode & 0o777) == 0o600

    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"a": 1}')
    elsewhere.chmod(0o600)
    target.unlink()
    target.symlink_to(elsewhere)
    write_private(target, '{"a": 1}')
    assert not target.is_symlink() and target.read_text() == '{"a": 1}'

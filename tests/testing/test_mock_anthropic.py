"""The mock Anthropic Messages API, over plain HTTP and against the real Claude Code CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmgw_jupyter.testing.mock_anthropic import (
    SHELL_TOOL,
    STRUCTURED_TOOL,
    AnthropicBehaviour,
    DirectiveError,
    MockAnthropicServer,
    claude_cli_env,
    parse_directives,
    strip_system_reminders,
)

CLAUDE_VERSION = "2.1.328"
CLAUDE_TIMEOUT = 60
REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "claude"
STREAM_ARGS = ("-p", "--output-format", "stream-json", "--verbose")


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def mock_claude_api() -> Iterator[MockAnthropicServer]:
    """A started mock Messages API, fresh (empty log, default behaviour) per test."""
    with MockAnthropicServer() as server:
        yield server


@pytest.fixture(scope="module")
def claude_path() -> str:
    """The real Claude Code CLI: ``LLMGW_CLAUDE_PATH`` or the bootstrap's ``.claude-cli``."""
    explicit = os.environ.get("LLMGW_CLAUDE_PATH")
    path = Path(explicit) if explicit else REPO / ".claude-cli" / "node_modules" / ".bin" / "claude"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(
            f"Claude Code CLI not found at {path}: scripts/bootstrap.sh installs "
            f"@anthropic-ai/claude-code@{CLAUDE_VERSION} into .claude-cli "
            "(or set LLMGW_CLAUDE_PATH)"
        )
    return str(path)


@pytest.fixture
def claude_env(mock_claude_api: MockAnthropicServer, tmp_path: Path) -> dict[str, str]:
    return claude_cli_env(mock_claude_api.base_url, tmp_path / "claude-state")


def _run_claude(
    claude_path: str,
    env: dict[str, str],
    cwd: Path,
    prompt: str,
    args: Sequence[str] = (),
) -> tuple[int, list[dict[str, Any]]]:
    """Run claude with ``prompt`` on stdin to the end; return (exit code, stream-json events)."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [claude_path, *STREAM_ARGS, *args],
        input=prompt,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=CLAUDE_TIMEOUT,
        start_new_session=True,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events


def _result(events: list[dict[str, Any]]) -> dict[str, Any]:
    results = [e for e in events if e["type"] == "result"]
    assert len(results) == 1, events
    assert events[-1] is results[0]
    return results[0]


def _session_id(events: list[dict[str, Any]]) -> str:
    init = events[0]
    assert (init["type"], init["subtype"]) == ("system", "init"), init
    return str(init["session_id"])


def _transcript(env: dict[str, str], session_id: str) -> Path:
    [path] = list((Path(env["CLAUDE_CONFIG_DIR"]) / "projects").glob(f"*/{session_id}.jsonl"))
    return path


def _post(
    server: MockAnthropicServer,
    messages: list[dict[str, Any]] | str,
    *,
    stream: bool = True,
    tools: list[dict[str, Any]] | None = None,
) -> httpx.Response:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": [{"type": "text", "text": messages}]}]
    body: dict[str, Any] = {
        "model": "claude-test",
        "max_tokens": 100,
        "stream": stream,
        "messages": messages,
    }
    if tools is not None:
        body["tools"] = tools
    return httpx.post(f"{server.base_url}/v1/messages?beta=true", json=body, timeout=10)


def _sse(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")
    ]


def _streamed_text(events: list[dict[str, Any]]) -> list[str]:
    """The text of each content block, reassembled from its deltas."""
    texts: dict[int, str] = {}
    for event in events:
        if event["type"] == "content_block_delta" and event["delta"]["type"] == "text_delta":
            texts[event["index"]] = texts.get(event["index"], "") + event["delta"]["text"]
    return [texts[i] for i in sorted(texts)]


def _tool_use(events: list[dict[str, Any]]) -> dict[str, Any]:
    [start] = [e for e in events if e["type"] == "content_block_start"]
    partial = "".join(
        e["delta"]["partial_json"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    )
    return dict(start["content_block"], input=json.loads(partial))


# -- the stream over plain HTTP --------------------------------------------------------------


def test_stream_shape_and_deterministic_usage(mock_claude_api: MockAnthropicServer) -> None:
    reminder = "<system-reminder>\nignore me\n</system-reminder>"
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": reminder}, {"type": "text", "text": "hi"}],
        }
    ]
    first = _post(mock_claude_api, messages)
    second = _post(mock_claude_api, messages)
    assert first.status_code == 200
    assert first.headers["content-type"] == "text/event-stream"
    events = _sse(first.text)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["message_start", "ping"]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[2] == "content_block_start" and kinds[-3] == "content_block_stop"
    assert set(kinds[3:-3]) == {"content_block_delta"}
    assert _streamed_text(events) == ["echo: hi"]

    message = events[0]["message"]
    assert message["id"].startswith("msg_") and message["role"] == "assistant"
    assert message["model"] == "claude-test" and message["content"] == []
    assert message["usage"]["input_tokens"] > 0
    assert message["usage"]["cache_read_input_tokens"] > 0
    delta = events[-2]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == len(b"echo: hi") // 4
    assert delta["usage"] == _sse(second.text)[-2]["usage"]

    [request, _] = mock_claude_api.message_requests
    assert request.route == "/v1/messages" and request.path.endswith("?beta=true")
    assert request.streaming and request.model == "claude-test"
    assert request.last_user_text == "hi"


def test_non_streaming_request_gets_a_json_message(mock_claude_api: MockAnthropicServer) -> None:
    response = _post(mock_claude_api, "plain", stream=False)
    assert response.status_code == 200
    message = response.json()
    assert message["type"] == "message"
    assert message["content"] == [{"type": "text", "text": "echo: plain"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["output_tokens"] == len(b"echo: plain") // 4


def test_long_text_arrives_in_several_deltas(mock_claude_api: MockAnthropicServer) -> None:
    prompt = "x" * 100
    events = _sse(_post(mock_claude_api, prompt).text)
    deltas = [e for e in events if e["type"] == "content_block_delta"]
    assert len(deltas) > 1
    assert _streamed_text(events) == [f"echo: {prompt}"]


def test_steps_are_separate_text_blocks(mock_claude_api: MockAnthropicServer) -> None:
    events = _sse(_post(mock_claude_api, "[mock:steps=3] go").text)
    assert _streamed_text(events) == ["step 1/3", "step 2/3", "echo: [mock:steps=3] go"]
    starts = [e["index"] for e in events if e["type"] == "content_block_start"]
    assert starts == [0, 1, 2]


def test_usage_directives_set_the_reported_figures(mock_claude_api: MockAnthropicServer) -> None:
    prompt = "[mock:input_tokens=1000,output_tokens=50,cache_read=300,cache_creation=7] count"
    events = _sse(_post(mock_claude_api, prompt).text)
    start_usage = events[0]["message"]["usage"]
    assert start_usage["input_tokens"] == 1000
    assert start_usage["cache_read_input_tokens"] == 300
    assert start_usage["cache_creation_input_tokens"] == 7
    assert events[-2]["usage"]["output_tokens"] == 50


def test_history_directive_lists_the_user_turns(mock_claude_api: MockAnthropicServer) -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": [{"type": "text", "text": "echo: first"}]},
        {"role": "user", "content": "<system-reminder>x</system-reminder>second [mock:history]"},
    ]
    events = _sse(_post(mock_claude_api, messages).text)
    assert _streamed_text(events) == ["user turns: 2: first | second [mock:history]"]
    [request] = mock_claude_api.message_requests
    assert request.messages == [
        ("user", "first"),
        ("assistant", "echo: first"),
        ("user", "second [mock:history]"),
    ]


def test_shell_block_calls_bash_then_reports_its_output(
    mock_claude_api: MockAnthropicServer,
) -> None:
    prompt = "[mock-shell]echo hi[/mock-shell]"
    events = _sse(_post(mock_claude_api, prompt).text)
    tool_use = _tool_use(events)
    assert tool_use["name"] == SHELL_TOOL == "Bash"
    assert tool_use["id"].startswith("toolu_")
    assert tool_use["input"]["command"] == "echo hi"
    assert tool_use["input"]["description"]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"

    result = {
        "type": "tool_result",
        "tool_use_id": tool_use["id"],
        "content": "hi",
        "is_error": False,
    }
    messages = [
        {"role": "user", "content": prompt},
        {
            "role": "assistant",
            "content": [{k: tool_use[k] for k in ("type", "id", "name", "input")}],
        },
        {"role": "user", "content": [result]},
    ]
    answer = _sse(_post(mock_claude_api, messages).text)
    assert _streamed_text(answer) == ["shell output: hi"]
    assert answer[-2]["delta"]["stop_reason"] == "end_turn"
    assert mock_claude_api.message_requests[-1].tool_outputs == ["hi"]


def test_json_block_calls_structured_output(mock_claude_api: MockAnthropicServer) -> None:
    events = _sse(_post(mock_claude_api, '[mock-json]{"answer": 42}[/mock-json]').text)
    tool_use = _tool_use(events)
    assert tool_use["name"] == STRUCTURED_TOOL
    assert tool_use["input"] == {"answer": 42}
    bad = _post(mock_claude_api, "[mock-json]{not json[/mock-json]")
    assert bad.status_code == 400
    assert "mock-json" in bad.json()["error"]["message"]


@pytest.mark.parametrize(
    ("status", "kind"),
    [(500, "api_error"), (401, "authentication_error"), (429, "rate_limit_error")],
)
def test_failures_have_anthropic_error_bodies_and_no_retry(
    mock_claude_api: MockAnthropicServer, status: int, kind: str
) -> None:
    response = _post(mock_claude_api, f"[mock:fail={status}] no")
    assert response.status_code == status
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["request-id"]
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert str(status) in body["error"]["message"]


def test_unknown_directive_is_a_400(mock_claude_api: MockAnthropicServer) -> None:
    response = _post(mock_claude_api, "[mock:dealy=5] typo")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "dealy" in response.json()["error"]["message"]


def test_request_without_messages_is_a_400(mock_claude_api: MockAnthropicServer) -> None:
    response = httpx.post(
        f"{mock_claude_api.base_url}/v1/messages", json={"model": "m"}, timeout=10
    )
    assert response.status_code == 400
    assert "messages" in response.json()["error"]["message"]


def test_drop_breaks_the_stream_but_not_the_json_fallback(
    mock_claude_api: MockAnthropicServer,
) -> None:
    with pytest.raises(httpx.TransportError):
        _post(mock_claude_api, "[mock:drop] bye")
    fallback = _post(mock_claude_api, "[mock:drop] bye", stream=False)
    assert fallback.json()["content"][0]["text"] == "echo: [mock:drop] bye"


def test_other_routes(mock_claude_api: MockAnthropicServer) -> None:
    base = mock_claude_api.base_url
    hello = httpx.head(f"{base}/api/hello", timeout=10)
    assert hello.status_code == 200 and hello.content == b""
    assert httpx.head(f"{base}/nowhere", timeout=10).status_code == 404
    missing = httpx.get(f"{base}/v1/models", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    assert httpx.post(f"{base}/v1/complete", json={}, timeout=10).status_code == 404
    counted = httpx.post(
        f"{base}/v1/messages/count_tokens", json={"messages": [], "model": "m"}, timeout=10
    )
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0
    assert [(r.method, r.route) for r in mock_claude_api.requests] == [
        ("HEAD", "/api/hello"),
        ("HEAD", "/nowhere"),
        ("GET", "/v1/models"),
        ("POST", "/v1/complete"),
        ("POST", "/v1/messages/count_tokens"),
    ]
    assert mock_claude_api.message_requests == []


def test_python_behaviour_and_queue(mock_claude_api: MockAnthropicServer) -> None:
    mock_claude_api.set_behaviour(reply="fixed answer")
    mock_claude_api.queue_behaviour(fail=500)
    assert _post(mock_claude_api, "a").status_code == 500
    assert _streamed_text(_sse(_post(mock_claude_api, "b").text)) == ["fixed answer"]
    assert [r.last_user_text for r in mock_claude_api.requests] == ["a", "b"]
    assert mock_claude_api.requests[0].headers["content-type"] == "application/json"
    mock_claude_api.clear()
    assert mock_claude_api.requests == []
    assert mock_claude_api.behaviour == AnthropicBehaviour()


def test_stop_does_not_hang_on_a_sleeping_handler() -> None:
    server = MockAnthropicServer().start()
    outcome: list[BaseException | httpx.Response] = []

    def client() -> None:
        try:
            outcome.append(_post(server, "[mock:delay=120] forever"))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    server.wait_for_requests(1, timeout=10)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert isinstance(outcome[0], httpx.TransportError)


def test_wait_for_requests_times_out(mock_claude_api: MockAnthropicServer) -> None:
    with pytest.raises(TimeoutError):
        mock_claude_api.wait_for_requests(1, timeout=0.05)


def test_parse_directives_and_reminders() -> None:
    assert parse_directives("plain") == {}
    assert parse_directives("[mock:delay=5] x [mock:drop,history]") == {
        "delay": 5.0,
        "drop": True,
        "history": True,
    }
    assert parse_directives("[mock:output_tokens=9]") == {"output_tokens": 9}
    for bad in ("[mock:steps=zero]", "[mock:steps=0]", "[mock:fail=200]", "[mock:input_tokens=-1]"):
        with pytest.raises(DirectiveError):
            parse_directives(bad)
    text = "<system-reminder>a\nb</system-reminder>\nkeep <system-reminder>c</system-reminder>me"
    assert strip_system_reminders(text) == "keep me"


def test_claude_cli_env_is_private_and_offline(tmp_path: Path) -> None:
    base = {"PATH": "/bin", "ANTHROPIC_AUTH_TOKEN": "real", "CLAUDE_CODE_USE_BEDROCK": "1"}
    env = claude_cli_env("http://127.0.0.1:9", tmp_path / "state", base)
    assert "ANTHROPIC_AUTH_TOKEN" not in env and "CLAUDE_CODE_USE_BEDROCK" not in env
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert env["ANTHROPIC_API_KEY"]
    assert Path(env["CLAUDE_CONFIG_DIR"]).is_dir() and Path(env["CLAUDE_CODE_TMPDIR"]).is_dir()
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["DISABLE_AUTOUPDATER"] == "1" and env["CLAUDE_CODE_MAX_RETRIES"] == "0"
    assert "127.0.0.1" in env["NO_PROXY"].split(",")
    assert env["PATH"] == "/bin"


def test_main_prints_base_url_and_stops_on_sigterm() -> None:
    argv = [sys.executable, "-m", "llmgw_jupyter.testing.mock_anthropic", "--port", "0"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            base_url = proc.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:")
            body = {"messages": [{"role": "user", "content": "ping"}], "stream": True}
            response = httpx.post(f"{base_url}/v1/messages", json=body, timeout=10)
            assert "echo: ping" in response.text
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            assert "Warning" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()


def test_fixtures_are_real_stream_json_runs() -> None:
    """The captured fixtures parse, and each ends as index.json says (for the parser's tests)."""
    index = json.loads((FIXTURES / "index.json").read_text())
    assert {p.stem for p in FIXTURES.glob("*.jsonl")} == set(index)
    for name, meta in index.items():
        events = [
            json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines()
        ]
        assert events, name
        if meta["signal"] == "SIGTERM":
            assert meta["exit_code"] == 143 and "result" not in [e["type"] for e in events]
            continue
        result = events[-1]
        assert result["type"] == "result", name
        assert result["is_error"] is (meta["exit_code"] != 0 or meta["signal"] is not None), name


# -- against the real Claude Code CLI ------------------------------------------------------


def test_cli_round_trip(
    claude_path: str,
    claude_env: dict[str, str],
    mock_claude_api: MockAnthropicServer,
    tmp_path: Path,
) -> None:
    prompt = "say hello [mock:input_tokens=1200,cache_read=3400,output_tokens=56]"
    code, events = _run_claude(claude_path, claude_env, tmp_path / "work", prompt)
    assert code == 0, events
    session = _session_id(events)
    assert events[0]["claude_code_version"] == CLAUDE_VERSION
    texts = [
        block["text"]
        for e in events
        if e["type"] == "assistant"
        for block in e["message"]["content"]
        if block["type"] == "text"
    ]
    assert texts == [f"echo: {prompt}"]
    result = _result(events)
    assert (result["subtype"], result["is_error"]) == ("success", False)
    assert result["result"] == f"echo: {prompt}"
    assert result["session_id"] == session
    usage = result["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"]) == (1200, 3400)
    assert (usage["cache_creation_input_tokens"], usage["output_tokens"]) == (0, 56)
    assert result["total_cost_usd"] > 0
    [per_model] = result["modelUsage"].values()
    assert per_model["costUSD"] == pytest.approx(result["total_cost_usd"])

    [request] = mock_claude_api.requests  # no probes: non-essential traffic is off
    assert (request.method, request.route) == ("POST", "/v1/messages")
    assert request.path.endswith("?beta=true") and request.streaming
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["x-claude-code-session-id"] == session
    assert request.last_user_text == prompt
    assert _transcript(claude_env, session).is_file()


def test_cli_resume_and_fork(
    claude_path: str,
    claude_env: dict[str, str],
    mock_claude_api: MockAnthropicServer,
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    code, events = _run_claude(claude_path, claude_env, work, "first prompt")
    assert code == 0, events
    parent = _session_id(events)
    first_cost = _result(events)["total_cost_usd"]

    code, events = _run_claude(
        claude_path, claude_env, work, "second [mock:history]", ["--resume", parent]
    )
    assert code == 0, events
    assert _session_id(events) == parent
    resumed = _result(events)
    assert resumed["result"] == "user turns: 2: first prompt | second [mock:history]"
    # On resume, total_cost_usd counts the whole session; this run alone is the difference.
    [this_run] = resumed["model_usage_since_last_result"].values()
    assert resumed["total_cost_usd"] == pytest.approx(first_cost + this_run["costUSD"])

    parent_file = _transcript(claude_env, parent)
    before = parent_file.read_bytes()
    code, events = _run_claude(
        claude_path,
        claude_env,
        work,
        "third [mock:history]",
        ["--resume", parent, "--fork-session"],
    )
    assert code == 0, events
    fork = _session_id(events)
    assert fork != parent
    assert _result(events)["result"] == (
        "user turns: 3: first prompt | second [mock:history] | third [mock:history]"
    )
    forked_request = mock_claude_api.message_requests[-1]
    assert forked_request.headers["x-claude-code-session-id"] == fork
    assert ("assistant", "echo: first prompt") in forked_request.messages
    assert parent_file.read_bytes() == before
    assert _transcript(claude_env, fork) != parent_file


def test_cli_shell_tool_and_permissions(
    claude_path: str,
    claude_env: dict[str, str],
    mock_claude_api: MockAnthropicServer,
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    outside = tmp_path / "outside.txt"
    outside.write_text("secret-outside\n")
    prompt = f"[mock-shell]cat {outside}[/mock-shell]"

    code, events = _run_claude(claude_path, claude_env, work, prompt)
    assert code == 0, events
    denied = _result(events)
    assert denied["is_error"] is False  # a refused tool use is not a failed run
    assert [d["tool_name"] for d in denied["permission_denials"]] == ["Bash"]
    assert "secret-outside" not in denied["result"]
    assert any(e.get("subtype") == "permission_denied" for e in events)

    code, events = _run_claude(
        claude_path, claude_env, work, prompt, ["--allowedTools", "Bash", "--"]
    )
    assert code == 0, events
    assert _result(events)["result"] == "shell output: secret-outside"
    assert mock_claude_api.message_requests[-1].tool_outputs == ["secret-outside"]

    code, events = _run_claude(
        claude_path, claude_env, work, prompt, ["--disallowedTools", "Bash", "--"]
    )
    assert code == 0, events
    assert "Bash" not in events[0]["tools"]
    assert "No such tool available: Bash" in _result(events)["result"]


def test_cli_options_model_max_turns_json_schema(
    claude_path: str,
    claude_env: dict[str, str],
    mock_claude_api: MockAnthropicServer,
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    code, events = _run_claude(
        claude_path,
        claude_env,
        work,
        "which model",
        ["--model", "claude-sonnet-4-5", "--permission-mode", "acceptEdits"],
    )
    assert code == 0, events
    assert (events[0]["model"], events[0]["permissionMode"]) == ("claude-sonnet-4-5", "acceptEdits")
    assert mock_claude_api.message_requests[-1].model == "claude-sonnet-4-5"

    code, events = _run_claude(
        claude_path,
        claude_env,
        work,
        "[mock-shell]echo hi[/mock-shell]",
        ["--max-turns", "1", "--allowedTools", "Bash", "--"],
    )
    assert code == 1
    capped = _result(events)
    assert (capped["subtype"], capped["terminal_reason"], capped["is_error"]) == (
        "error_max_turns",
        "max_turns",
        True,
    )

    schema = '{"type":"object","properties":{"answer":{"type":"string"}},"required":["answer"]}'
    code, events = _run_claude(
        claude_path,
        claude_env,
        work,
        '[mock-json]{"answer": "forty-two"}[/mock-json]',
        ["--json-schema", schema],
    )
    assert code == 0, events
    assert _result(events)["structured_output"] == {"answer": "forty-two"}
    offered = [t["name"] for t in mock_claude_api.message_requests[-1].body["tools"]]
    assert STRUCTURED_TOOL in offered


def test_cli_api_failure_is_an_error_result(
    claude_path: str,
    claude_env: dict[str, str],
    mock_claude_api: MockAnthropicServer,
    tmp_path: Path,
) -> None:
    code, events = _run_claude(claude_path, claude_env, tmp_path / "work", "[mock:fail=500] fail")
    assert code == 1
    result = _result(events)
    assert result["is_error"] is True
    assert result["subtype"] == "success"  # the subtype does not say it failed
    assert (result["terminal_reason"], result["api_error_status"]) == ("api_error", 500)
    assert "mock failure 500" in result["result"]
    assert len(mock_claude_api.message_requests) == 1  # not retried


def test_cli_sigterm_during_a_slow_answer(
    claude_path: str,
    claude_env: dict[str, str],
    mock_claude_api: MockAnthropicServer,
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen(
        [claude_path, *STREAM_ARGS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=claude_env,
        cwd=work,
        start_new_session=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("[mock:steps=2,step_delay=120] slow work")
        proc.stdin.close()
        lines: list[str] = []
        first_step = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if '"step 1/2"' in line:
                    first_step.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert first_step.wait(CLAUDE_TIMEOUT), lines
        assert proc.poll() is None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 143
        assert time.monotonic() - started < 5
        reader.join(timeout=10)
        assert not any('"type":"result"' in line for line in lines)
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)  # the whole process group is gone
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

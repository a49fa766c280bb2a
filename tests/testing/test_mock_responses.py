"""The mock Responses API, checked against the real Codex CLI and over plain HTTP."""

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

from llmgw_jupyter.testing.codex_home import render_config, write_codex_home
from llmgw_jupyter.testing.mock_responses import (
    DirectiveError,
    MockBehaviour,
    MockResponsesServer,
    parse_directives,
)

CODEX_TIMEOUT = 60


# -- helpers -------------------------------------------------------------------------------


EXEC_ARGS = ("--json", "--skip-git-repo-check", "--", "-")


def _run_codex(
    codex_path: str, env: dict[str, str], cwd: Path, prompt: str, args: Sequence[str] = EXEC_ARGS
) -> tuple[int, list[dict[str, Any]], str]:
    """Run codex with ``prompt`` on stdin to the end; return (exit code, JSONL events, stderr)."""
    cwd.mkdir(exist_ok=True)
    proc = subprocess.run(
        [codex_path, "exec", *args],
        input=prompt,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=CODEX_TIMEOUT,
        start_new_session=True,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events, proc.stderr


def _messages(events: list[dict[str, Any]]) -> list[str]:
    return [
        e["item"]["text"]
        for e in events
        if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"
    ]


def _thread_id(events: list[dict[str, Any]]) -> str:
    return str(next(e["thread_id"] for e in events if e["type"] == "thread.started"))


class _LiveCodex:
    """A codex run in its own process group whose JSONL lines are read as they arrive."""

    def __init__(self, codex_path: str, env: dict[str, str], cwd: Path, prompt: str) -> None:
        cwd.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [codex_path, "exec", "--json", "--skip-git-repo-check", "--", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(prompt)
        self.proc.stdin.close()
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                with self._cond:
                    self.events.append(json.loads(line))
                    self._cond.notify_all()

    def wait_for_event(self, kind: str, timeout: float = CODEX_TIMEOUT) -> dict[str, Any]:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: any(e["type"] == kind for e in self.events), timeout=timeout
            )
            assert ok, f"no {kind} event within {timeout} s; got {self.events}"
            return next(e for e in self.events if e["type"] == kind)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def live_codex(codex_path: str, codex_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    runs: list[_LiveCodex] = []

    def start(prompt: str) -> _LiveCodex:
        run = _LiveCodex(codex_path, codex_env, tmp_path / "work", prompt)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


def _post(server: MockResponsesServer, text: str, **kw: Any) -> httpx.Response:
    body = {
        "model": "gpt-5.5",
        "stream": True,
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        ],
    }
    return httpx.post(f"{server.base_url}/responses", json=body, timeout=10, **kw)


def _sse_events(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")
    ]


# -- against the real Codex CLI ------------------------------------------------------------


def test_round_trip_echoes_prompt(
    codex_path: str, codex_env: dict[str, str], mock_model: MockResponsesServer, tmp_path: Path
) -> None:
    code, events, _ = _run_codex(codex_path, codex_env, tmp_path / "work", "say hello to the mock")
    assert code == 0, events
    assert _messages(events) == ["echo: say hello to the mock"]
    usage = next(e["usage"] for e in events if e["type"] == "turn.completed")
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0

    [request] = mock_model.requests
    assert request.path == "/v1/responses"
    assert request.body["stream"] is True
    assert request.last_user_text == "say hello to the mock"
    assert request.turn_metadata is not None
    assert request.turn_metadata["thread_id"] == _thread_id(events)
    assert request.turn_metadata["history_initialization"] == "new"


def test_fork_carries_parent_history_and_keeps_parent_file(
    codex_path: str,
    codex_env: dict[str, str],
    codex_home: Path,
    mock_model: MockResponsesServer,
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    code, events, _ = _run_codex(codex_path, codex_env, work, "first prompt")
    assert code == 0, events
    parent = _thread_id(events)
    [parent_file] = list((codex_home / "sessions").rglob(f"rollout-*-{parent}.jsonl"))
    before = parent_file.read_bytes()

    code, fork_events, _ = _run_codex(
        codex_path,
        codex_env,
        work,
        "second prompt",
        ["fork", parent, "--json", "--skip-git-repo-check", "-"],
    )
    assert code == 0, fork_events
    assert _thread_id(fork_events) != parent
    assert _messages(fork_events) == ["echo: second prompt"]

    forked = mock_model.requests[-1]
    assert forked.last_user_text == "second prompt"
    assert ("user", "first prompt") in forked.messages
    assert ("assistant", "echo: first prompt") in forked.messages
    assert forked.turn_metadata is not None
    assert forked.turn_metadata["history_initialization"] == "cold_fork"
    assert parent_file.read_bytes() == before


def test_fail_500_directive_makes_codex_fail(
    codex_path: str, codex_env: dict[str, str], mock_model: MockResponsesServer, tmp_path: Path
) -> None:
    code, events, _ = _run_codex(
        codex_path, codex_env, tmp_path / "work", "[mock:fail=500] please fail"
    )
    assert code == 1
    kinds = [e["type"] for e in events]
    assert "error" in kinds and "turn.failed" in kinds
    assert _messages(events) == []
    assert len(mock_model.requests) == 1  # retries are off in the written config


def test_delay_directive_keeps_codex_running(
    live_codex: Any, mock_model: MockResponsesServer
) -> None:
    run = live_codex("[mock:delay=60] take your time")
    [request] = mock_model.wait_for_requests(1, timeout=CODEX_TIMEOUT)
    assert request.last_user_text == "[mock:delay=60] take your time"
    run.wait_for_event("turn.started")
    assert run.proc.poll() is None
    run.kill()
    assert not any(e["type"] == "item.completed" for e in run.events)


def test_steps_arrive_as_separate_items(
    codex_path: str, codex_env: dict[str, str], tmp_path: Path
) -> None:
    code, events, _ = _run_codex(
        codex_path, codex_env, tmp_path / "work", "[mock:steps=3,step_delay=0.2] work"
    )
    assert code == 0, events
    assert _messages(events) == ["step 1/3", "step 2/3", "echo: [mock:steps=3,step_delay=0.2] work"]


def test_first_step_is_visible_while_the_turn_is_running(
    live_codex: Any, mock_model: MockResponsesServer
) -> None:
    run = live_codex("[mock:steps=2,step_delay=60] slow work")
    first = run.wait_for_event("item.completed")
    assert first["item"]["text"] == "step 1/2"
    assert run.proc.poll() is None
    assert len(mock_model.requests) == 1


# -- plain HTTP ----------------------------------------------------------------------------


def test_stream_events_and_deterministic_usage(mock_model: MockResponsesServer) -> None:
    first = _post(mock_model, "hi there")
    second = _post(mock_model, "hi there")
    assert first.status_code == 200
    assert first.headers["content-type"] == "text/event-stream"
    events = _sse_events(first.text)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[1]["item"]["content"][0]["text"] == "echo: hi there"
    done = events[-1]["response"]
    assert done["id"].startswith("resp_")
    assert done["usage"] == _sse_events(second.text)[-1]["response"]["usage"]
    assert done["usage"]["input_tokens_details"]["cached_tokens"] > 0


def test_401_has_openai_error_body(mock_model: MockResponsesServer) -> None:
    response = _post(mock_model, "[mock:fail=401] who am I")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    assert "401" in error["message"]


def test_python_behaviour_and_queue(mock_model: MockResponsesServer) -> None:
    mock_model.set_behaviour(reply="fixed answer")
    mock_model.queue_behaviour(fail=500)
    assert _post(mock_model, "a").status_code == 500
    events = _sse_events(_post(mock_model, "b").text)
    assert events[1]["item"]["content"][0]["text"] == "fixed answer"
    assert [r.last_user_text for r in mock_model.requests] == ["a", "b"]
    mock_model.clear()
    assert mock_model.requests == []
    assert mock_model.behaviour == MockBehaviour()


def test_unknown_directive_is_a_400(mock_model: MockResponsesServer) -> None:
    response = _post(mock_model, "[mock:dealy=5] typo")
    assert response.status_code == 400
    assert "dealy" in response.json()["error"]["message"]


def test_dropped_connection_breaks_the_stream(mock_model: MockResponsesServer) -> None:
    with pytest.raises(httpx.TransportError):
        _post(mock_model, "[mock:drop] bye")


def test_stop_does_not_hang_on_a_sleeping_handler() -> None:
    server = MockResponsesServer().start()
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


def test_wait_for_requests_times_out(mock_model: MockResponsesServer) -> None:
    with pytest.raises(TimeoutError):
        mock_model.wait_for_requests(1, timeout=0.05)


def test_parse_directives() -> None:
    assert parse_directives("plain") == {}
    assert parse_directives("[mock:delay=5] x [mock:drop]") == {"delay": 5.0, "drop": True}
    assert parse_directives("[mock:steps=3, step_delay=0.5]") == {"steps": 3, "step_delay": 0.5}
    assert parse_directives("[mock:fail=401]") == {"fail": 401}
    with pytest.raises(DirectiveError):
        parse_directives("[mock:steps=zero]")
    with pytest.raises(DirectiveError):
        parse_directives("[mock:steps=0]")
    with pytest.raises(DirectiveError):
        parse_directives("[mock:fail=200]")


def test_main_prints_base_url_and_stops_on_sigterm() -> None:
    argv = [sys.executable, "-m", "llmgw_jupyter.testing.mock_responses", "--port", "0"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            base_url = proc.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
            body = {"input": [{"role": "user", "content": "ping"}], "stream": True}
            response = httpx.post(f"{base_url}/responses", json=body, timeout=10)
            assert "echo: ping" in response.text
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            assert "Warning" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()


def test_codex_home_config(tmp_path: Path) -> None:
    tomllib = pytest.importorskip("tomllib")
    home = write_codex_home(tmp_path / "home", "http://127.0.0.1:9/v1", extra_toml="[x]\ny = 1")
    config = tomllib.loads((home / "config.toml").read_text())
    assert config["model"] == "gpt-5.5" and config["model_provider"] == "mock"
    assert config["check_for_update_on_startup"] is False
    assert config["analytics"] == {"enabled": False}
    assert config["features"] == {"plugins": False, "unbounded_connection_retries": False}
    provider = config["model_providers"]["mock"]
    assert provider["base_url"] == "http://127.0.0.1:9/v1"
    assert provider["wire_api"] == "responses"
    assert provider["request_max_retries"] == 0 and provider["stream_max_retries"] == 0
    assert "env_key" not in provider
    assert config["x"] == {"y": 1}
    # tomli-w quotes what is not a bare key: any provider name reads back as itself
    odd = tomllib.loads(render_config("http://x/v1", provider='bad "name" ]'))
    assert odd["model_provider"] == 'bad "name" ]'
    assert odd["model_providers"]['bad "name" ]']["base_url"] == "http://x/v1"

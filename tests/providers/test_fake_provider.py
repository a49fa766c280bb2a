"""The fake provider through the gateway: a second CLI registered by configuration only, with
its own tools, stream format and sessions. No Codex binary is needed here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llmgw_jupyter.gateway import Gateway
from llmgw_jupyter.providers.base import ProviderSettings
from llmgw_jupyter.runtime import Runtime, RuntimeConfig
from llmgw_jupyter.testing.fake_cli import answer_text, knobs
from llmgw_jupyter.tools import Caller

FAKE = "llmgw_jupyter.testing.fake_provider:FakeProvider"
OWNER = Caller.owner()
WAIT = 60.0


@pytest.fixture(params=["bwrap", "off"])
async def gateway(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Gateway]:
    """A gateway whose runtime knows the fake only from its settings; Codex is unreachable."""
    monkeypatch.setenv("LLMGW_CODEX_PATH", str(tmp_path / "no-codex"))
    runtime = Runtime(
        RuntimeConfig(
            data_dir=tmp_path / "data",
            isolation=request.param,
            provider_settings={"fake": ProviderSettings(class_ref=FAKE)},
        )
    )
    await runtime.start()
    gw = Gateway(runtime)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.close()
        await runtime.close(cancel_running=True)


async def call(gw: Gateway, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await gw.call(tool, arguments, OWNER)
    assert not result.is_error, result.text
    assert result.structured is not None
    return dict(result.structured)


async def run(gw: Gateway, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Submit and wait for the end; the finished job view."""
    job = (await call(gw, tool, arguments))["job"]
    record = await gw.runtime.wait_finished(job["id"], WAIT)
    assert record.is_terminal
    return record.to_dict()


def session_file(gw: Gateway, session_id: str) -> Path:
    [found] = (gw.runtime.data_dir / "callers").rglob(f"sessions/{session_id}.json")
    return found


def test_knobs_and_answers_are_deterministic() -> None:
    prompt = "say [fake:events=2,usage=5/7] hi  there"
    assert knobs(prompt) == {"events": "2", "usage": "5/7"}
    assert answer_text(prompt, 0) == "echo: say hi there"
    assert answer_text(prompt, 2) == "echo: say hi there (after 2 turns)"


async def test_a_request_runs_the_fake_with_its_events_and_usage(
    gateway: Gateway, tmp_path: Path
) -> None:
    out = await call(
        gateway,
        "fake_request",
        {"prompt": "hello [fake:events=3,usage=11/4]", "wait_seconds": WAIT, "model": "m1"},
    )
    assert out["done"] is True, out["message"]
    job = out["job"]
    assert (job["provider"], job["tool"], job["status"]) == ("fake", "fake_request", "succeeded")
    assert out["final_message"] == "echo: hello"
    assert out["usage"]["input_tokens"] == 11 and out["usage"]["output_tokens"] == 4
    events = [e for e in gateway.runtime.events(job["id"]) if e.type.startswith("fake.")]
    assert [e.type for e in events] == [
        "fake.session", "fake.progress", "fake.progress", "fake.progress", "fake.answer",
    ]  # fmt: skip
    assert events[0].data["model"] == "m1"
    assert [e.summary for e in events[1:4]] == [f"step {i} of 3" for i in (1, 2, 3)]


async def test_light_views_keep_the_fake_providers_own_small_arguments(gateway: Gateway) -> None:
    job = await run(gateway, "fake_request_async", {"prompt": "p", "timeout_seconds": 30})
    status = await call(gateway, "llm_job_status", {"job_id": job["id"]})
    assert status["job"]["args"] == {"timeout_seconds": 30}
    assert status["job"]["omitted_args"] == ["prompt"]


async def test_a_failure_of_the_cli_ends_the_job_failed_with_its_message(gateway: Gateway) -> None:
    job = await run(gateway, "fake_request_async", {"prompt": "[fake:fail=quota gone] x"})
    assert job["status"] == "failed"
    assert job["error"] == {"category": "cli_error", "message": "quota gone"}


async def test_resume_and_fork_continue_sessions_and_a_fork_leaves_its_parent_alone(
    gateway: Gateway,
) -> None:
    first = await run(gateway, "fake_request_async", {"prompt": "one"})
    parent = first["session_id"]
    assert parent
    before = hashlib.sha256(session_file(gateway, parent).read_bytes()).hexdigest()

    fork = await run(gateway, "fake_fork_session", {"session_id": parent, "prompt": "two"})
    assert fork["status"] == "succeeded"
    assert fork["final_message"] == "echo: two (after 1 turns)"
    assert fork["session_id"] != parent and fork["parent_session_id"] == parent
    assert hashlib.sha256(session_file(gateway, parent).read_bytes()).hexdigest() == before

    resumed = await run(gateway, "fake_request_async", {"session_id": parent, "prompt": "three"})
    assert resumed["session_id"] == parent
    assert resumed["final_message"] == "echo: three (after 1 turns)"
    turns = json.loads(session_file(gateway, parent).read_text())
    assert [t["prompt"] for t in turns] == ["one", "three"]

    last = await run(gateway, "fake_fork_session", {"last": True, "prompt": "four"})
    assert last["parent_session_id"] == parent


async def test_a_session_of_one_provider_is_not_continued_by_another(gateway: Gateway) -> None:
    first = await run(gateway, "fake_request_async", {"prompt": "one"})
    result = await gateway.call(
        "codex_request_async", {"prompt": "x", "session_id": first["session_id"]}, OWNER
    )
    assert result.is_error
    assert result.structured is not None
    assert "is a fake session; continue it with fake_request_async" in result.text


async def test_codex_missing_refuses_codex_jobs_only(gateway: Gateway) -> None:
    refused = await gateway.call("codex_request_async", {"prompt": "x"}, OWNER)
    assert refused.is_error and refused.structured is not None
    assert refused.structured["error"]["category"] == "spawn_error"
    job = await run(gateway, "fake_request_async", {"prompt": "still fine"})
    assert job["status"] == "succeeded"


async def test_a_hanging_fake_is_cancelled(gateway: Gateway) -> None:
    job = (await call(gateway, "fake_request_async", {"prompt": "[fake:hang]"}))["job"]
    record = gateway.runtime.get(job["id"])
    for _ in range(20):  # woken by the job's own status events, not polling
        assert record is not None and not record.is_terminal
        if record.session_id:  # the fake printed its session line: it runs, and hangs
            break
        _, record = await gateway.runtime.wait_for_events(job["id"], record.last_seq, WAIT)
    assert record is not None and record.session_id and record.status.value == "running"
    await call(gateway, "llm_job_cancel", {"job_id": job["id"]})
    final = await gateway.runtime.wait_finished(job["id"], WAIT)
    assert final.status.value == "cancelled"

"""Jobs running the real Codex CLI 0.169.0 against the mock Responses API."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import (
    assert_group_gone,
    group_members,
    wait_for_event,
    wait_started,
)

from llmgw_jupyter.errors import ErrorCategory, GatewayError
from llmgw_jupyter.providers.codex import GATEWAY_CONFIG
from llmgw_jupyter.runtime import JobRecord, JobSpec, JobStatus, Runtime
from llmgw_jupyter.testing.mock_responses import MockResponsesServer

CODEX_WAIT = 60.0
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def codex_spec(prompt: str, workdir: Path, kind: str = "exec", **args: Any) -> JobSpec:
    args = {"prompt": prompt, "working_dir": str(workdir), **args}
    return JobSpec("codex", "codex_request_async", kind, args)


async def run(
    rt: Runtime, prompt: str, workdir: Path, kind: str = "exec", **args: Any
) -> JobRecord:
    job = await rt.submit(codex_spec(prompt, workdir, kind, **args))
    done = await rt.wait_finished(job.id, CODEX_WAIT)
    assert done.is_terminal, f"job still {done.status.value} after {CODEX_WAIT} s"
    return done


def stdout_events(rt: Runtime, job_id: str) -> list[dict[str, Any]]:
    text = (rt.job_dir(job_id) / "stdout.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def user_and_assistant(messages: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The conversation part of a request (drops developer instructions)."""
    return [(role, text) for role, text in messages if role in ("user", "assistant")]


def session_file(codex_home: Path, session_id: str) -> Path:
    files = list(codex_home.glob(f"sessions/**/rollout-*-{session_id}.jsonl"))
    assert len(files) == 1, f"expected one rollout file for {session_id}, found {files}"
    return files[0]


async def test_exec_round_trip_gives_answer_session_usage_events_and_paged_output(
    codex_runtime: Runtime, mock_model: MockResponsesServer, workdir: Path
) -> None:
    rt = codex_runtime
    job = await rt.submit(codex_spec("say hello to the gateway", workdir))
    assert job.status is JobStatus.QUEUED

    done = await rt.wait_finished(job.id, CODEX_WAIT)

    assert done.status is JobStatus.SUCCEEDED, done.error_message
    assert done.final_message == "echo: say hello to the gateway"
    assert done.exit_code == 0
    assert done.error_category is None
    assert done.session_id is not None and UUID.match(done.session_id)
    assert mock_model.requests[-1].last_user_text == "say hello to the gateway"
    assert done.argv is not None
    gateway_settings = [item for setting in GATEWAY_CONFIG for item in ("-c", setting)]
    assert done.argv[1:] == [
        "exec", "--json", "--skip-git-repo-check", "--sandbox", "read-only",
        "-C", str(workdir.resolve()), "-c", 'sandbox_mode="read-only"', *gateway_settings,
        "--", "-",
    ]  # fmt: skip

    # Usage is what Codex reported in turn.completed.
    completed = [e for e in stdout_events(rt, job.id) if e["type"] == "turn.completed"]
    assert len(completed) == 1
    usage = done.usage.to_dict()
    assert usage.pop("cost_usd") is None  # Codex reports no cost
    assert usage == {key: completed[0]["usage"][key] for key in usage}
    assert (done.usage.input_tokens or 0) > 0 and (done.usage.output_tokens or 0) > 0

    # Every event, gateway status changes included, in order with gap-free sequence numbers.
    events = rt.events(job.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert done.last_seq == events[-1].seq
    assert [e.type for e in events] == [
        "job.status", "job.status", "thread.started", "turn.started",
        "item.completed", "turn.completed", "job.status",
    ]  # fmt: skip
    statuses = [e.data["status"] for e in events if e.type == "job.status"]
    assert statuses == ["queued", "running", "succeeded"]
    assert events[2].data["thread_id"] == done.session_id
    assert events[4].data["item"]["text"] == "echo: say hello to the gateway"

    # Raw stdout read back in small pages equals the file, which is exactly Codex's JSONL.
    pages, offset = [], 0
    while True:
        page = rt.read_output(job.id, "stdout", offset, limit=100)
        assert page.offset == offset and page.size == done.stdout_bytes
        pages.append(page.data)
        offset = page.next_offset
        if page.eof:
            break
    assert len(pages) > 2
    raw = "".join(pages)
    assert raw.encode() == (rt.job_dir(job.id) / "stdout.jsonl").read_bytes()
    first_line = json.loads(raw.splitlines()[0])
    assert first_line == {"type": "thread.started", "thread_id": done.session_id}

    [session] = rt.sessions()
    assert session.session_id == done.session_id
    assert session.parent_session_id is None and session.created_by_job == job.id


async def test_fork_carries_parent_history_leaves_parent_file_untouched_and_records_lineage(
    codex_runtime: Runtime, mock_model: MockResponsesServer, codex_home: Path, workdir: Path
) -> None:
    rt = codex_runtime
    parent = await run(rt, "remember the word alpha", workdir)
    assert parent.status is JobStatus.SUCCEEDED, parent.error_message
    assert parent.session_id is not None
    parent_file = session_file(codex_home, parent.session_id)
    before = parent_file.read_bytes()
    requests_before = len(mock_model.requests)

    fork = await run(rt, "which word did I say?", workdir, "fork", session_id=parent.session_id)

    assert fork.status is JobStatus.SUCCEEDED, fork.error_message
    assert fork.final_message == "echo: which word did I say?"
    assert fork.session_id is not None and fork.session_id != parent.session_id
    assert fork.parent_session_id == parent.session_id
    assert fork.argv is not None and fork.argv[1:3] == ["exec", "fork"]
    assert fork.argv[-2:] == [parent.session_id, "-"]

    [request] = mock_model.requests[requests_before:]
    assert user_and_assistant(request.messages)[-3:] == [
        ("user", "remember the word alpha"),
        ("assistant", "echo: remember the word alpha"),
        ("user", "which word did I say?"),
    ]
    assert request.turn_metadata is not None
    assert request.turn_metadata.get("forked_from_thread_id") == parent.session_id
    assert parent_file.read_bytes() == before

    sessions = {s.session_id: s for s in rt.sessions()}
    assert sessions[parent.session_id].children == [fork.session_id]
    assert sessions[fork.session_id].parent_session_id == parent.session_id
    assert sessions[fork.session_id].created_by_job == fork.id
    assert sessions[parent.session_id].last_job_id == parent.id


async def test_resume_keeps_the_session_id_and_continues_its_history(
    codex_runtime: Runtime, mock_model: MockResponsesServer, codex_home: Path, workdir: Path
) -> None:
    rt = codex_runtime
    first = await run(rt, "remember the word beta", workdir)
    assert first.status is JobStatus.SUCCEEDED, first.error_message
    assert first.session_id is not None
    rollout = session_file(codex_home, first.session_id)
    size_before = rollout.stat().st_size

    again = await run(rt, "and now?", workdir, "resume", session_id=first.session_id)

    assert again.status is JobStatus.SUCCEEDED, again.error_message
    assert again.session_id == first.session_id
    assert again.parent_session_id is None
    assert again.final_message == "echo: and now?"
    assert user_and_assistant(mock_model.requests[-1].messages)[-3:] == [
        ("user", "remember the word beta"),
        ("assistant", "echo: remember the word beta"),
        ("user", "and now?"),
    ]
    assert rollout.stat().st_size > size_before  # resume appends to the same thread
    [session] = rt.sessions()
    assert session.session_id == first.session_id
    assert session.created_by_job == first.id and session.last_job_id == again.id


async def test_cancel_of_a_slow_job_kills_the_whole_group_and_keeps_partial_output(
    codex_runtime: Runtime, mock_model: MockResponsesServer, workdir: Path, codex_path: str
) -> None:
    rt = codex_runtime
    job = await rt.submit(codex_spec("[mock:delay=60] take your time", workdir))
    await asyncio.to_thread(mock_model.wait_for_requests, 1, CODEX_WAIT)
    running = await wait_started(rt, job.id)
    assert running.status is JobStatus.RUNNING and running.pid is not None
    pgid = running.pid
    assert os.getpgid(pgid) == pgid, "each job must lead its own process group"
    members = group_members(pgid)
    assert pgid in {p.pid for p in members}
    if Path(codex_path).resolve().suffix == ".js":
        # The npm launcher (node) runs the native codex binary as a child in the same group:
        # the case where signalling only the launcher would leave the real worker running.
        assert "codex" in {p.name() for p in members if p.pid != pgid}

    cancelled = await rt.cancel(job.id, reason="the user changed their mind")

    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.cancel_reason == "the user changed their mind"
    assert cancelled.final_message is None
    assert_group_gone(pgid, [p.pid for p in members])
    page = rt.read_output(job.id, "stdout")
    assert page.size == cancelled.stdout_bytes > 0
    assert json.loads(page.data.splitlines()[0])["type"] == "thread.started"
    assert rt.events(job.id)[-1].data == {"status": "cancelled"}
    assert (await rt.cancel(job.id)).status is JobStatus.CANCELLED  # cancelling again is harmless


@pytest.mark.parametrize(
    ("status", "category"), [(500, ErrorCategory.CLI_ERROR), (401, ErrorCategory.AUTH_ERROR)]
)
async def test_model_side_failure_is_failed_with_codex_message(
    codex_runtime: Runtime, workdir: Path, status: int, category: ErrorCategory
) -> None:
    rt = codex_runtime
    done = await run(rt, f"[mock:fail={status}] this will not work", workdir)

    assert done.status is JobStatus.FAILED
    assert done.error_category is category
    assert done.exit_code not in (0, None)
    failed = [e for e in stdout_events(rt, done.id) if e["type"] == "turn.failed"]
    assert failed, "Codex reports the failure as turn.failed"
    assert done.error_message == failed[-1]["error"]["message"]
    assert done.error_message
    if status == 401:
        assert "401" in done.error_message
    assert done.to_dict()["error"] == {"category": category.value, "message": done.error_message}


async def test_live_events_arrive_while_the_job_is_still_running(
    codex_runtime: Runtime, workdir: Path
) -> None:
    rt = codex_runtime
    job = await rt.submit(codex_spec("[mock:steps=2,step_delay=3] show progress", workdir))

    first, record = await wait_for_event(
        rt,
        job.id,
        lambda e: e.type == "item.completed" and e.data["item"].get("text") == "step 1/2",
        CODEX_WAIT,
    )
    assert record.status is JobStatus.RUNNING
    assert record.finished_at is None

    done = await rt.wait_finished(job.id, CODEX_WAIT)
    assert done.status is JobStatus.SUCCEEDED, done.error_message
    texts = [
        e.data["item"]["text"]
        for e in rt.events(job.id)
        if e.type == "item.completed" and e.data["item"]["type"] == "agent_message"
    ]
    assert texts == ["step 1/2", "echo: [mock:steps=2,step_delay=3] show progress"]
    assert done.final_message == texts[-1]
    assert first.seq < done.last_seq


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"prompt": "hi", "bogus": 1}, "bogus"),
        ({"prompt": "hi\x00there"}, "prompt"),
        ({"prompt": "hi", "working_dir": "-x"}, "working_dir"),
        ({"prompt": "hi", "config_overrides": {"sandbox_mode": "danger-full-access"}},
         "config_overrides"),
        ({"prompt": "hi", "model": "gpt 5; rm -rf /"}, "model"),
    ],
)  # fmt: skip
async def test_invalid_arguments_are_refused_naming_the_field_and_store_nothing(
    codex_runtime: Runtime, args: dict[str, Any], field: str
) -> None:
    rt = codex_runtime
    with pytest.raises(GatewayError) as caught:
        await rt.submit(JobSpec("codex", "codex_request_async", "exec", args))
    assert caught.value.category is ErrorCategory.INVALID_INPUT
    assert caught.value.field == field
    assert field in caught.value.message
    assert rt.list_jobs() == ([], 0)


async def test_missing_codex_executable_is_refused_at_submit_with_install_advice(
    runtime: Any, codex_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMGW_CODEX_PATH", str(tmp_path / "nowhere" / "codex"))
    rt = await runtime(codex_home=str(codex_home))

    with pytest.raises(GatewayError) as caught:
        await rt.submit(JobSpec("codex", "codex_request_async", "exec", {"prompt": "hi"}))

    assert caught.value.category is ErrorCategory.SPAWN_ERROR
    message = caught.value.message
    assert str(tmp_path / "nowhere" / "codex") in message and "LLMGW_CODEX_PATH" in message
    assert "npm install" in message and "@openai/codex@0.169.0" in message
    assert rt.list_jobs() == ([], 0)

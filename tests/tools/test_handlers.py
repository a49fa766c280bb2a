"""The tool handlers, called as the owner through ``Gateway.call``, running the real Codex CLI
against the mock Responses server (the fake Codex only where a job must hang or be many).

Mock directives in prompts: ``[mock:delay=S]`` holds the model's answer, ``[mock:fail=500]`` fails
the request, ``[mock:steps=N,step_delay=S]`` spaces out several output items.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from llmgw_jupyter.testing.mock_responses import MockResponsesServer
from tools.gateway_harness import WAIT, Harness, progress_recorder


def session_file(codex_home: Path, session_id: str) -> Path:
    """Codex keeps each session in ``$CODEX_HOME/sessions/Y/M/D/rollout-<ts>-<id>.jsonl``."""
    found = list((codex_home / "sessions").rglob(f"rollout-*-{session_id}.jsonl"))
    assert len(found) == 1, f"session file of {session_id}: {found}"
    return found[0]


def history(mock: MockResponsesServer) -> list[str]:
    """The user messages the model saw in the last request."""
    return [text for role, text in mock.requests[-1].messages if role == "user"]


# -- codex_request ----------------------------------------------------------------------------
async def test_codex_request_answers_when_the_job_ends_within_the_wait(gateway: Harness) -> None:
    seen, progress = progress_recorder()
    result = await gateway.call(
        "codex_request",
        {"prompt": "What is two plus two?", "working_dir": str(gateway.workdir)},
        progress=progress,
    )
    assert not result.is_error, result.text
    out = result.structured
    assert out is not None
    assert out["done"] is True
    assert out["final_message"] == "echo: What is two plus two?"
    job = out["job"]
    assert job["status"] == "succeeded"
    assert job["exit_code"] == 0
    assert job["kind"] == "exec"
    assert job["caller"] == "owner"
    assert job["working_dir"] == str(gateway.workdir.resolve())
    assert out["session_id"] == job["session_id"] is not None
    assert out["usage"]["input_tokens"] > 0
    assert out["usage"]["output_tokens"] > 0
    assert out["message"] == f"Job {job['id']} succeeded."
    assert json.loads(result.text) == out
    messages = [message for _, _, message in seen]
    assert any(m and m.startswith("thread.started") for m in messages)
    assert any(m and m.startswith("turn.completed") for m in messages)


async def test_codex_request_returns_promptly_after_the_job_ends(gateway: Harness) -> None:
    """Completion wakes the waiter: no poll interval between the job's end and the answer.

    The issue's target is 20 ms (measured by the benchmark); this bound only catches polling.
    """
    out = await gateway.run("Be quick.")
    returned = time.time()
    record = gateway.runtime.get(out["job"]["id"])
    assert record is not None and record.finished_at is not None
    gap = returned - record.finished_at
    assert -0.01 < gap < 0.2, f"answered {gap * 1000:.1f} ms after the job ended"


async def test_codex_request_past_its_wait_answers_with_the_job_id_and_a_poll_hint(
    gateway: Harness,
) -> None:
    prompt = "Take your time. [mock:delay=5]"
    started = time.monotonic()
    out = await gateway.ok(
        "codex_request",
        {"prompt": prompt, "wait_seconds": 0.5, "working_dir": str(gateway.workdir)},
    )
    waited = time.monotonic() - started
    assert out["done"] is False
    assert waited < 4.5, "the call must not wait for the job past wait_seconds"
    job = out["job"]
    assert job["status"] in ("queued", "running")
    assert out["final_message"] is None
    assert f"Job {job['id']} is still {job['status']} after 0.5 s" in out["message"]
    assert f'llm_job_watch {{"job_id": "{job["id"]}"' in out["message"]
    assert f'llm_job_result {{"job_id": "{job["id"]}"}}' in out["message"]

    done = await gateway.finished(job["id"])  # the job went on without its caller
    assert done.status.value == "succeeded"
    assert done.final_message == f"echo: {prompt}"
    result = await gateway.ok("llm_job_result", {"job_id": job["id"]})
    assert result["done"] is True
    assert result["final_message"] == f"echo: {prompt}"


async def test_codex_request_with_a_zero_wait_answers_at_once(fake_gateway: Harness) -> None:
    out = await fake_gateway.ok("codex_request", {"prompt": "[fake:hang]", "wait_seconds": 0})
    assert out["done"] is False
    assert out["job"]["status"] in ("queued", "running")


async def test_a_failed_model_call_ends_the_request_as_failed(gateway: Harness) -> None:
    out = await gateway.ok(
        "codex_request",
        {"prompt": "break [mock:fail=500]", "working_dir": str(gateway.workdir)},
    )
    assert out["done"] is True
    assert out["job"]["status"] == "failed"
    assert out["job"]["error"]["category"] == "cli_error"
    assert out["message"].startswith(f"Job {out['job']['id']} failed. ")


# -- codex_request_async, llm_job_watch, llm_job_result ------------------------------------
async def test_an_async_request_is_watched_to_its_end_and_its_output_paged_whole(
    gateway: Harness,
) -> None:
    prompt = "Count slowly, naïvely. [mock:steps=3,step_delay=0.3]"
    started = time.monotonic()
    submitted = await gateway.ok(
        "codex_request_async", {"prompt": prompt, "working_dir": str(gateway.workdir)}
    )
    assert time.monotonic() - started < 5.0  # answered at once, not after the run
    job = submitted["job"]
    job_id = job["id"]
    assert job["status"] in ("queued", "running")
    assert job["tool"] == "codex_request_async"
    assert submitted["approval"] is None
    assert f'llm_job_watch {{"job_id": "{job_id}"' in submitted["message"]

    seen, progress = progress_recorder()
    events: list[dict[str, Any]] = []
    after = 0
    deadline = time.monotonic() + WAIT
    while True:
        result = await gateway.call(
            "llm_job_watch", {"job_id": job_id, "after_seq": after}, progress=progress
        )
        assert not result.is_error, result.text
        watched = result.structured
        assert watched is not None
        assert [e["seq"] for e in watched["events"]] == sorted(e["seq"] for e in watched["events"])
        assert all(e["seq"] > after for e in watched["events"])
        events += watched["events"]
        after = watched["next_after_seq"]
        if watched["done"]:
            break
        assert watched["events"], "a watch returns early only for new events or the end"
        assert time.monotonic() < deadline, "the job did not end"
    assert watched["job"]["status"] == "succeeded"

    types = [e["type"] for e in events]
    assert types[0] == "job.status" or "thread.started" in types
    assert "thread.started" in types and "turn.completed" in types
    step_messages = [e["summary"] for e in events if e["type"] == "item.completed"]
    assert "message: step 1/3" in step_messages and "message: step 2/3" in step_messages
    # every event the watch returned was also sent as a progress notification, in order
    assert [(value, message) for value, _, message in seen] == [
        (e["seq"], f"{e['type']}: {e['summary']}") for e in events
    ]

    whole = gateway.runtime.read_output(job_id, "stdout", 0, 1 << 20)
    assert whole.eof and whole.size > 0
    pages: list[str] = []
    offset = 0
    while True:
        result_page = await gateway.ok(
            "llm_job_result", {"job_id": job_id, "offset": offset, "limit": 100}
        )
        page = result_page["output"]
        assert page["stream"] == "stdout"
        assert page["offset"] == offset
        assert 0 < len(page["data"].encode()) <= 100 or page["eof"]
        assert page["size"] == whole.size
        pages.append(page["data"])
        offset = page["next_offset"]
        if page["eof"]:
            break
    assert len(pages) > 2
    assert offset == whole.size
    assert "".join(pages) == whole.data  # pages reassemble the file, UTF-8 never split
    lines = [json.loads(line) for line in "".join(pages).splitlines()]
    assert lines[0]["type"] == "thread.started"
    assert lines[-1]["type"] == "turn.completed"

    final = result_page
    assert final["done"] is True
    assert final["final_message"] == f"echo: {prompt}"
    assert final["session_id"] == lines[0]["thread_id"]
    assert final["exit_code"] == 0
    assert final["usage"]["input_tokens"] > 0
    assert final["error"] is None


async def test_job_status_returns_events_after_a_sequence_number(gateway: Harness) -> None:
    out = await gateway.run("Status please.")
    job_id = out["job"]["id"]
    everything = await gateway.ok("llm_job_status", {"job_id": job_id})
    events = everything["events"]
    assert len(events) >= 4
    assert everything["done"] is True
    assert everything["next_after_seq"] == events[-1]["seq"] == everything["job"]["last_seq"]
    later = await gateway.ok("llm_job_status", {"job_id": job_id, "after_seq": events[1]["seq"]})
    assert later["events"] == events[2:]
    two = await gateway.ok("llm_job_status", {"job_id": job_id, "limit": 2})
    assert two["events"] == events[:2]
    assert two["next_after_seq"] == events[1]["seq"]


async def test_a_watch_with_nothing_new_waits_its_timeout_and_returns_empty(
    fake_gateway: Harness,
) -> None:
    submitted = await fake_gateway.ok("codex_request_async", {"prompt": "[fake:hang]"})
    job_id = submitted["job"]["id"]
    after = 0
    for _ in range(20):  # each watch returns at the job's next events: its last line is
        first = await fake_gateway.ok("llm_job_watch", {"job_id": job_id, "after_seq": after})
        after = first["next_after_seq"]
        if any(e["type"] == "fake.session" for e in first["events"]):  # the fake's last line
            break
    else:
        pytest.fail("the fake never printed its session line")
    started = time.monotonic()
    idle = await fake_gateway.ok(
        "llm_job_watch", {"job_id": job_id, "after_seq": after, "timeout_seconds": 0.3}
    )
    assert time.monotonic() - started >= 0.25
    assert idle["events"] == []
    assert idle["done"] is False
    assert idle["next_after_seq"] == after


async def test_result_of_a_running_job_is_not_done(fake_gateway: Harness) -> None:
    submitted = await fake_gateway.ok("codex_request_async", {"prompt": "[fake:hang]"})
    result = await fake_gateway.ok("llm_job_result", {"job_id": submitted["job"]["id"]})
    assert result["done"] is False
    assert result["final_message"] is None
    assert result["exit_code"] is None


async def test_stderr_is_paged_too(gateway: Harness) -> None:
    out = await gateway.run("Anything on stderr?")
    page = await gateway.ok("llm_job_result", {"job_id": out["job"]["id"], "stream": "stderr"})
    assert page["output"]["stream"] == "stderr"
    assert page["output"]["size"] == out["job"]["stderr_bytes"]


async def test_an_idempotency_key_returns_the_same_job(fake_gateway: Harness) -> None:
    arguments = {"prompt": "once", "idempotency_key": "k-1"}
    first = await fake_gateway.ok("codex_request_async", arguments)
    again = await fake_gateway.ok("codex_request_async", arguments)
    assert again["job"]["id"] == first["job"]["id"]
    _, total = fake_gateway.runtime.list_jobs()
    assert total == 1


async def test_unknown_job_ids_are_not_found(gateway: Harness) -> None:
    for tool in ("llm_job_status", "llm_job_watch", "llm_job_result", "llm_job_cancel"):
        result = await gateway.call(tool, {"job_id": "nosuchjob"})
        assert result.is_error
        assert result.error == "not_found"
        assert result.text == "not_found: job nosuchjob not found"


# -- fork and resume ----------------------------------------------------------------------------
async def test_fork_by_session_id_runs_on_a_copy_and_leaves_the_original_untouched(
    gateway: Harness, codex_home: Path, mock_model: MockResponsesServer
) -> None:
    first = await gateway.run("Remember the word apricot.")
    parent = first["session_id"]
    original = session_file(codex_home, parent).read_bytes()

    submitted = await gateway.ok(
        "codex_fork_session",
        {"session_id": parent, "prompt": "Which word?", "working_dir": str(gateway.workdir)},
    )
    job = submitted["job"]
    assert job["kind"] == "fork"
    assert job["tool"] == "codex_fork_session"
    assert job["parent_session_id"] == parent
    done = await gateway.finished(job["id"])
    assert done.status.value == "succeeded", done.error_message
    assert done.final_message == "echo: Which word?"
    assert done.session_id is not None and done.session_id != parent
    assert done.parent_session_id == parent
    assert history(mock_model)[-2:] == ["Remember the word apricot.", "Which word?"]
    assert session_file(codex_home, parent).read_bytes() == original


async def test_fork_of_the_last_session_within_a_working_dir(
    gateway: Harness, mock_model: MockResponsesServer
) -> None:
    here = gateway.tmp / "here"
    there = gateway.tmp / "there"
    here.mkdir()
    there.mkdir()
    in_here = await gateway.run("First, here.", working_dir=str(here))
    in_there = await gateway.run("Then, there.", working_dir=str(there))

    submitted = await gateway.ok(
        "codex_fork_session", {"last": True, "prompt": "Back here.", "working_dir": str(here)}
    )
    assert submitted["job"]["parent_session_id"] == in_here["session_id"]
    done = await gateway.finished(submitted["job"]["id"])
    assert done.status.value == "succeeded", done.error_message
    assert history(mock_model)[-2:] == ["First, here.", "Back here."]

    newest = await gateway.ok("codex_fork_session", {"last": True, "prompt": "Newest."})
    assert newest["job"]["parent_session_id"] in {in_there["session_id"], done.session_id}
    assert newest["job"]["parent_session_id"] != in_here["session_id"]


async def test_fork_of_the_last_session_finds_the_dir_however_it_is_spelled(
    fake_gateway: Harness,
) -> None:
    """Sessions remember the resolved working dir; ``last`` must match the same directory."""
    out = await fake_gateway.run("Somewhere.")
    spelled = str(fake_gateway.workdir) + "/./"
    submitted = await fake_gateway.ok(
        "codex_fork_session", {"last": True, "prompt": "Again.", "working_dir": spelled}
    )
    assert submitted["job"]["parent_session_id"] == out["session_id"]


async def test_fork_of_the_last_session_where_there_is_none_is_not_found(
    gateway: Harness,
) -> None:
    result = await gateway.call(
        "codex_fork_session", {"last": True, "prompt": "x", "working_dir": str(gateway.workdir)}
    )
    assert result.is_error
    assert result.error == "not_found"
    assert result.text == (
        f"not_found: a session in {gateway.workdir} known to this gateway not found"
    )
    _, total = gateway.runtime.list_jobs()
    assert total == 0


async def test_resume_through_session_id_continues_the_same_session(
    gateway: Harness, codex_home: Path, mock_model: MockResponsesServer
) -> None:
    first = await gateway.run("Remember the number 7.")
    session = first["session_id"]
    size_before = session_file(codex_home, session).stat().st_size

    resumed = await gateway.run("Which number?", session_id=session)
    assert resumed["job"]["kind"] == "resume"
    assert resumed["session_id"] == session
    assert resumed["final_message"] == "echo: Which number?"
    assert history(mock_model)[-2:] == ["Remember the number 7.", "Which number?"]
    assert session_file(codex_home, session).stat().st_size > size_before

    submitted = await gateway.ok(
        "codex_request_async",
        {"prompt": "And again?", "session_id": session, "working_dir": str(gateway.workdir)},
    )
    assert submitted["job"]["kind"] == "resume"
    done = await gateway.finished(submitted["job"]["id"])
    assert done.session_id == session
    sessions = (await gateway.ok("llm_session_list", {}))["sessions"]
    assert [s["session_id"] for s in sessions] == [session]
    assert sessions[0]["last_job_id"] == submitted["job"]["id"]
    assert sessions[0]["created_by_job"] == first["job"]["id"]


# -- cancel -------------------------------------------------------------------------------------
async def test_cancel_stops_a_running_codex_job(gateway: Harness) -> None:
    submitted = await gateway.ok(
        "codex_request_async",
        {"prompt": "Never mind. [mock:delay=30]", "working_dir": str(gateway.workdir)},
    )
    job_id = submitted["job"]["id"]
    after = 0
    while True:  # wait until Codex really runs: it printed thread.started
        watched = await gateway.ok("llm_job_watch", {"job_id": job_id, "after_seq": after})
        after = watched["next_after_seq"]
        assert not watched["done"], watched["job"]
        if any(e["type"] == "thread.started" for e in watched["events"]):
            break
    started = time.monotonic()
    cancelled = await gateway.ok("llm_job_cancel", {"job_id": job_id})
    assert time.monotonic() - started < 15
    assert cancelled["job"]["status"] == "cancelled"
    assert cancelled["job"]["cancel_reason"] == "cancelled by owner"
    assert cancelled["job"]["finished_at"] is not None
    again = await gateway.ok("llm_job_cancel", {"job_id": job_id})  # idempotent
    assert again["job"]["status"] == "cancelled"
    assert again["job"]["finished_at"] == cancelled["job"]["finished_at"]


async def test_cancel_of_a_finished_job_leaves_it_as_it_ended(gateway: Harness) -> None:
    out = await gateway.run("Done already.")
    after = await gateway.ok("llm_job_cancel", {"job_id": out["job"]["id"]})
    assert after["job"]["status"] == "succeeded"
    assert after["job"]["cancel_reason"] is None


# -- lists --------------------------------------------------------------------------------------
async def test_job_list_filters_by_states_and_caller_and_a_grant_sees_its_own_only(
    fake_gateway: Harness,
) -> None:
    gateway = fake_gateway
    agent = gateway.grant("agent", {"version": "1", "default": "allow"})
    work = {"working_dir": str(gateway.workdir)}
    mine = await gateway.ok("codex_request_async", {"prompt": "owner's", **work})
    theirs = await gateway.ok("codex_request_async", {"prompt": "agent's", **work}, agent)
    hanging = await gateway.ok("codex_request_async", {"prompt": "[fake:hang]", **work})
    for job in (mine, theirs):
        await gateway.finished(job["job"]["id"])

    by_agent = await gateway.ok("llm_job_list", {"caller": "grant:agent"})
    assert [j["id"] for j in by_agent["jobs"]] == [theirs["job"]["id"]]
    either = await gateway.ok("llm_job_list", {"statuses": ["running", "queued", "succeeded"]})
    assert either["total"] == 3
    only_done = await gateway.ok("llm_job_list", {"statuses": ["succeeded"], "caller": "owner"})
    assert [j["id"] for j in only_done["jobs"]] == [mine["job"]["id"]]

    own = await gateway.ok("llm_job_list", {}, agent)
    assert [j["id"] for j in own["jobs"]] == [theirs["job"]["id"]]
    assert (await gateway.ok("llm_job_list", {"caller": "grant:agent"}, agent)) == own
    peek = await gateway.call("llm_job_list", {"caller": "owner"}, agent)
    assert peek.is_error and peek.error == "invalid_input"
    assert "caller: a grant lists its own jobs only" in peek.text
    await gateway.ok("llm_job_cancel", {"job_id": hanging["job"]["id"]})


async def test_job_list_is_newest_first_filtered_and_paged(gateway: Harness) -> None:
    ok = [(await gateway.run(f"job {n}"))["job"]["id"] for n in range(3)]
    failed = await gateway.ok(
        "codex_request",
        {"prompt": "[mock:fail=500]", "working_dir": str(gateway.workdir)},
    )
    assert failed["job"]["status"] == "failed"

    everything = await gateway.ok("llm_job_list", {})
    assert everything["total"] == 4
    assert [j["id"] for j in everything["jobs"]] == [failed["job"]["id"], *reversed(ok)]
    created = [j["created_at"] for j in everything["jobs"]]
    assert created == sorted(created, reverse=True)

    succeeded = await gateway.ok("llm_job_list", {"status": "succeeded", "limit": 2})
    assert succeeded["total"] == 3
    assert (succeeded["limit"], succeeded["offset"]) == (2, 0)
    assert [j["id"] for j in succeeded["jobs"]] == [ok[2], ok[1]]
    rest = await gateway.ok("llm_job_list", {"status": "succeeded", "limit": 2, "offset": 2})
    assert rest["total"] == 3
    assert [j["id"] for j in rest["jobs"]] == [ok[0]]
    beyond = await gateway.ok("llm_job_list", {"limit": 2, "offset": 10})
    assert beyond == {"jobs": [], "total": 4, "limit": 2, "offset": 10}

    only_failed = await gateway.ok("llm_job_list", {"status": "failed"})
    assert [j["id"] for j in only_failed["jobs"]] == [failed["job"]["id"]]
    assert (await gateway.ok("llm_job_list", {"provider": "codex"}))["total"] == 4
    assert (await gateway.ok("llm_job_list", {"provider": "claude"}))["total"] == 0
    assert (await gateway.ok("llm_job_list", {"status": "running"}))["total"] == 0


async def test_session_list_shows_parents_and_fork_children(gateway: Harness) -> None:
    root = (await gateway.run("Root session."))["session_id"]
    other = (await gateway.run("Unrelated session."))["session_id"]
    forks = []
    for prompt in ("Fork one.", "Fork two."):
        submitted = await gateway.ok(
            "codex_fork_session",
            {"session_id": root, "prompt": prompt, "working_dir": str(gateway.workdir)},
        )
        done = await gateway.finished(submitted["job"]["id"])
        assert done.status.value == "succeeded", done.error_message
        forks.append(done.session_id)
    grandchild_job = await gateway.ok(
        "codex_fork_session",
        {"session_id": forks[0], "prompt": "Fork of a fork.", "working_dir": str(gateway.workdir)},
    )
    grandchild = (await gateway.finished(grandchild_job["job"]["id"])).session_id

    sessions = {s["session_id"]: s for s in (await gateway.ok("llm_session_list", {}))["sessions"]}
    assert set(sessions) == {root, other, *forks, grandchild}
    assert sessions[root]["parent_session_id"] is None
    assert sessions[root]["children"] == forks  # oldest first
    assert sessions[other]["children"] == []
    assert sessions[forks[0]]["parent_session_id"] == root
    assert sessions[forks[0]]["children"] == [grandchild]
    assert sessions[forks[1]]["children"] == []
    assert sessions[grandchild]["parent_session_id"] == forks[0]
    assert all(s["caller"] == "owner" and s["provider"] == "codex" for s in sessions.values())
    assert sessions[root]["working_dir"] == str(gateway.workdir.resolve())

    page = (await gateway.ok("llm_session_list", {"limit": 2}))["sessions"]
    assert [s["session_id"] for s in page] == [grandchild, forks[1]]  # most recently used first
    rest = (await gateway.ok("llm_session_list", {"limit": 10, "offset": 2}))["sessions"]
    assert [s["session_id"] for s in rest] == [forks[0], other, root]


async def test_session_list_pages_past_two_hundred_sessions(fake_gateway: Harness) -> None:
    """A page may hold up to 500 sessions, and any offset is reachable."""
    store = fake_gateway.runtime.store
    for n in range(260):
        store.record_session(
            session_id=f"s{n:03d}",
            provider="codex",
            caller="owner",
            parent_session_id=None,
            working_dir=None,
            job_id=f"job{n:03d}",
            ts=1_000_000.0 + n,
        )
    big = (await fake_gateway.ok("llm_session_list", {"limit": 500}))["sessions"]
    assert len(big) == 260
    tail = (await fake_gateway.ok("llm_session_list", {"limit": 50, "offset": 250}))["sessions"]
    assert [s["session_id"] for s in tail] == [f"s{n:03d}" for n in range(9, -1, -1)]

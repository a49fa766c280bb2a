"""JobHandle.merge_update: the follow task and a blocking wait may deliver the same update, so
merging is idempotent and ordered by the job view's version and the events' sequence numbers."""

from __future__ import annotations

from typing import Any, cast

from llmgw_jupyter.kernel.client import GatewayClient
from llmgw_jupyter.kernel.handle import ACTIVE_STATUSES, TERMINAL_STATUSES, JobHandle
from llmgw_jupyter.records import JobStatus


def view(status: str, updated_at: str, last_seq: int) -> dict[str, Any]:
    return {"id": "j1", "status": status, "updated_at": updated_at, "last_seq": last_seq}


def event(seq: int) -> dict[str, Any]:
    return {"seq": seq, "type": "agent.message", "summary": f"step {seq}"}


def handle_with_log() -> tuple[JobHandle, list[tuple[str, list[int]]]]:
    # merge_update never calls the client: no gateway is needed to test it.
    handle = JobHandle(cast(GatewayClient, None), view("queued", "2026-01-01T00:00:00", 0))
    calls: list[tuple[str, list[int]]] = []
    handle.add_listener(lambda h, fresh: calls.append((h.job["status"], [e["seq"] for e in fresh])))
    return handle, calls


def test_repeated_events_and_older_views_are_ignored() -> None:
    handle, calls = handle_with_log()
    running = view("running", "2026-01-01T00:00:01", 2)
    handle.merge_update(running, [event(1), event(2)])
    handle.merge_update(running, [event(1), event(2)])  # the same update, delivered twice
    handle.merge_update(view("queued", "2026-01-01T00:00:00", 0))  # an older view
    assert calls == [("running", [1, 2])]
    assert [e["seq"] for e in handle.events_so_far()] == [1, 2]
    assert handle.job["status"] == "running" and not handle.done


def test_only_fresh_events_reach_listeners_and_the_end_is_seen() -> None:
    handle, calls = handle_with_log()
    handle.merge_update(view("running", "2026-01-01T00:00:01", 2), [event(1), event(2)])
    handle.merge_update(view("succeeded", "2026-01-01T00:00:02", 3), [event(2), event(3)])
    assert calls == [("running", [1, 2]), ("succeeded", [3])]
    assert handle.done and handle.current_result().ok


def test_status_sets_are_the_records_sets_as_strings() -> None:
    assert {s.value for s in JobStatus if s.is_terminal} == TERMINAL_STATUSES
    assert {s.value for s in JobStatus if not s.is_terminal} == ACTIVE_STATUSES
    assert all(type(status) is str for status in TERMINAL_STATUSES | ACTIVE_STATUSES)


class _RecordingClient:
    """Answers every tool call with a submitted job and remembers which tool was called."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call_tool(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((tool, arguments))
        return {"job": {**view("queued", "2026-01-01T00:00:05", 0), "id": "child"}}


async def test_a_fork_goes_to_the_fork_tool_of_the_jobs_own_provider() -> None:
    client = _RecordingClient()
    parent = {**view("succeeded", "2026-01-01T00:00:02", 3), "provider": "claude"}
    parent["session_id"] = "9f0c2a1e-0000-4000-8000-000000000001"
    handle = JobHandle(cast(GatewayClient, client), parent)
    child = await handle.afork("go on", model="claude-sonnet-4-5")
    assert child.id == "child"
    assert client.calls == [
        (
            "claude_fork_session",
            {
                "model": "claude-sonnet-4-5",
                "prompt": "go on",
                "session_id": "9f0c2a1e-0000-4000-8000-000000000001",
            },
        )
    ]
    assert "claude job j1" in handle.summary_line()
    assert handle.snapshot_markdown(show_answer=False).startswith("**Claude ")
    assert "<b>Claude " in handle.snapshot_html(show_answer=False)

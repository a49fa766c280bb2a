"""The job store under the runtime: migrations, atomic transitions, events, sessions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmgw_jupyter.errors import ErrorCategory
from llmgw_jupyter.records import Usage
from llmgw_jupyter.runtime import JobRecord, JobStatus
from llmgw_jupyter.store.db import Database, SchemaTooNewError
from llmgw_jupyter.store.jobs import IdempotencyConflict, JobStore, SessionSighting
from llmgw_jupyter.store.schema import MIGRATIONS


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "store.sqlite3")
    yield database
    database.close()


@pytest.fixture
def store(db: Database) -> JobStore:
    return JobStore(db)


def job_values(job_id: str, ts: float = 1000.0, **overrides: Any) -> dict[str, Any]:
    values = {
        "id": job_id, "provider": "codex", "tool": "codex_request_async", "kind": "exec",
        "caller": "owner", "status": "queued", "args_json": '{"prompt": "p"}',
        "created_at": ts, "queued_at": ts, "updated_at": ts,
    }  # fmt: skip
    values.update(overrides)
    return values


def insert(store: JobStore, job_id: str, ts: float = 1000.0, **overrides: Any) -> None:
    store.insert_job(job_values(job_id, ts, **overrides), (ts, "job.status", "queued", {}))


def stored(store: JobStore, job_id: str) -> JobRecord:
    record = store.get_job(job_id)
    assert record is not None
    return record


def test_a_new_store_is_migrated_to_the_latest_version_in_wal_mode(
    db: Database, tmp_path: Path
) -> None:
    assert db.schema_version == len(MIGRATIONS)
    assert db.query("PRAGMA journal_mode")[0][0] == "wal"
    insert(JobStore(db), "a")
    db.close()

    reopened = Database(tmp_path / "store.sqlite3")  # migrations are not re-run
    assert reopened.schema_version == len(MIGRATIONS)
    assert JobStore(reopened).get_job("a") is not None
    reopened.close()


def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()

    with pytest.raises(SchemaTooNewError, match="upgrade llmgw-jupyter"):
        Database(path)


def test_transitions_are_conditional_and_recorded_as_events(store: JobStore) -> None:
    insert(store, "a")

    running = store.transition("a", JobStatus.RUNNING, 1001.0, expect=[JobStatus.QUEUED], pid=42)
    too_late = store.transition("a", JobStatus.CANCELLED, 1002.0, expect=[JobStatus.QUEUED])

    assert running is not None and running.status is JobStatus.RUNNING and running.pid == 42
    assert running.updated_at == 1001.0
    assert too_late is None
    events = store.events_after("a", 0, 10)
    assert [(e.seq, e.type, e.data) for e in events] == [
        (1, "job.status", {}),
        (2, "job.status", {"status": "running"}),
    ]
    assert stored(store, "a").status is JobStatus.RUNNING


def test_event_sequence_numbers_are_gap_free_per_job_and_page_by_seq(store: JobStore) -> None:
    insert(store, "a")
    insert(store, "b")

    last = store.append_events("a", [(1.0, "item.completed", f"e{i}", {"i": i}) for i in range(5)])
    store.append_events("b", [(1.0, "turn.started", "", {})])

    assert last == 6
    assert stored(store, "a").last_seq == 6
    page = store.events_after("a", 2, 3)
    assert [e.seq for e in page] == [3, 4, 5]
    assert [e.summary for e in page] == ["e1", "e2", "e3"]
    assert [e.seq for e in store.events_after("b", 0, 10)] == [1, 2]


def test_a_repeated_idempotency_key_of_one_caller_raises_with_the_existing_job(
    store: JobStore,
) -> None:
    insert(store, "a", idempotency_key="k")
    insert(store, "b", idempotency_key="k", caller="grant:bot")

    with pytest.raises(IdempotencyConflict) as conflict:
        insert(store, "c", idempotency_key="k")

    assert conflict.value.existing.id == "a"
    assert store.get_job("c") is None


def test_a_job_is_found_by_its_callers_idempotency_key_only(store: JobStore) -> None:
    insert(store, "a", idempotency_key="k")
    insert(store, "b", idempotency_key="k", caller="grant:bot")

    assert stored(store, "a") == store.find_by_idempotency_key("owner", "k")
    found = store.find_by_idempotency_key("grant:bot", "k")
    assert found is not None and found.id == "b"
    assert store.find_by_idempotency_key("grant:other", "k") is None
    assert store.find_by_idempotency_key("owner", "other") is None


def test_ending_an_unstarted_job_records_why_and_never_ends_a_running_one(
    store: JobStore,
) -> None:
    insert(store, "a")
    insert(store, "b", status="awaiting_approval")
    insert(store, "c")
    store.transition("c", JobStatus.RUNNING, 2.0)

    failed = store.end_unstarted(
        "a", JobStatus.FAILED, 3.0, message="cannot start", category=ErrorCategory.SPAWN_ERROR
    )
    assert failed is not None and failed.status is JobStatus.FAILED and failed.finished_at == 3.0
    assert failed.error_category is ErrorCategory.SPAWN_ERROR
    assert failed.error_message == "cannot start" and failed.cancel_reason is None
    cancelled = store.end_unstarted("b", JobStatus.CANCELLED, 3.0, cancel_reason="denied")
    assert cancelled is not None and cancelled.cancel_reason == "denied"
    assert cancelled.error_category is None
    assert store.end_unstarted("c", JobStatus.CANCELLED, 3.0, cancel_reason="late") is None
    assert stored(store, "c").status is JobStatus.RUNNING

    summaries = [store.events_after(job, 1, 10)[-1].summary for job in ("a", "b")]
    assert summaries == ["cannot start", "denied"]


def test_only_mutable_columns_can_be_updated(store: JobStore) -> None:
    insert(store, "a")
    store.update_job("a", session_id="s-1")
    assert stored(store, "a").session_id == "s-1"

    with pytest.raises(ValueError, match="not updatable"):
        store.update_job("a", status="succeeded")
    with pytest.raises(ValueError, match="not updatable"):
        store.transition("a", JobStatus.FAILED, 2.0, caller="someone else")


def test_listing_filters_pages_and_counts(store: JobStore) -> None:
    for i in range(5):
        insert(store, f"j{i}", ts=1000.0 + i, caller="owner" if i % 2 else "grant:bot")
    store.transition("j4", JobStatus.SUCCEEDED, 2000.0, finished_at=2000.0)

    jobs, total = store.list_jobs(caller="grant:bot", limit=2)
    assert total == 3 and [j.id for j in jobs] == ["j4", "j2"]  # newest first
    jobs, total = store.list_jobs(statuses=["queued"], offset=3)
    assert total == 4 and [j.id for j in jobs] == ["j0"]
    assert store.count_by_status() == {"queued": 4, "succeeded": 1}
    assert store.count_by_status("owner") == {"queued": 2}
    assert store.finished_before(2001.0) == ["j4"] and store.finished_before(2000.0) == []


def test_deleting_jobs_deletes_their_events(store: JobStore, db: Database) -> None:
    insert(store, "a")
    store.append_events("a", [(1.0, "turn.started", "", {})])

    store.delete_jobs(["a"])

    assert store.get_job("a") is None
    assert db.query("SELECT COUNT(*) FROM job_events")[0][0] == 0


def test_sessions_keep_their_creator_and_list_their_forks(store: JobStore) -> None:
    common = {"provider": "codex", "caller": "owner", "working_dir": "/w"}
    store.record_session(session_id="p", parent_session_id=None, job_id="j1", ts=1.0, **common)
    store.record_session(session_id="f1", parent_session_id="p", job_id="j2", ts=2.0, **common)
    store.record_session(session_id="f2", parent_session_id="p", job_id="j3", ts=3.0, **common)
    store.record_session(session_id="p", parent_session_id=None, job_id="j4", ts=4.0, **common)

    parent = store.get_session("p")
    assert parent is not None
    assert (parent.created_by_job, parent.last_job_id, parent.last_used_at) == ("j1", "j4", 4.0)
    listed = {s.session_id: s for s in store.list_sessions()}
    assert listed["p"].children == ["f1", "f2"]
    assert listed["f1"].parent_session_id == "p" and listed["f1"].children == []
    latest = store.latest_session(caller="owner", provider="codex", working_dir="/w")
    assert latest is not None and latest.session_id == "p"
    assert store.list_sessions(caller="grant:bot") == []


def test_events_usage_and_the_session_a_run_named_are_stored_together(store: JobStore) -> None:
    insert(store, "a")
    sighting = SessionSighting("s1", "codex", "owner", None, "/w", "a", 5.0)

    last = store.append_events(
        "a", [(5.0, "thread.started", "", {}), (5.0, "turn.started", "", {})],
        usage=Usage(10, 0, 2, 0), session=sighting,
    )  # fmt: skip

    job = stored(store, "a")
    assert last == job.last_seq == 3
    assert job.session_id == "s1" and job.usage.input_tokens == 10
    session = store.get_session("s1")
    assert session is not None and (session.created_by_job, session.working_dir) == ("a", "/w")


def test_a_session_named_after_the_event_cap_is_still_stored(store: JobStore) -> None:
    insert(store, "a")
    sighting = SessionSighting("s2", "codex", "owner", None, None, "a", 5.0)

    last = store.append_events("a", [], session=sighting)

    assert last == stored(store, "a").last_seq == 1  # no event added
    assert stored(store, "a").session_id == "s2" and store.get_session("s2") is not None
    assert store.append_events("a", []) == -1


def test_a_failed_append_stores_nothing_of_it(store: JobStore, db: Database) -> None:
    insert(store, "a")
    store.append_events("a", [(1.0, "turn.started", "", {})])
    sighting = SessionSighting("s3", "codex", "owner", None, None, "a", 5.0)
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON job_events BEGIN SELECT RAISE(ABORT, 'x'); END"
    )

    with pytest.raises(sqlite3.IntegrityError):
        store.append_events("a", [(2.0, "item.completed", "", {})], session=sighting)

    job = stored(store, "a")
    assert job.last_seq == 2 and job.session_id is None and store.get_session("s3") is None


def test_a_transition_that_returns_only_the_sequence_number_moves_the_job_alike(
    store: JobStore,
) -> None:
    insert(store, "a")
    assert store.transition_seq("a", JobStatus.RUNNING, 2.0, expect=[JobStatus.QUEUED]) == 2
    assert store.transition_seq("a", JobStatus.RUNNING, 3.0, expect=[JobStatus.QUEUED]) is None

    last = store.transition_seq(
        "a", JobStatus.SUCCEEDED, 4.0, expect=[JobStatus.RUNNING], summary="done", exit_code=0
    )

    job = stored(store, "a")
    assert last == job.last_seq == 3
    assert (job.status, job.exit_code, job.updated_at) == (JobStatus.SUCCEEDED, 0, 4.0)
    final = store.events_after("a", 2, 10)
    assert [(e.seq, e.type, e.summary, e.data) for e in final] == [
        (3, "job.status", "done", {"status": "succeeded"})
    ]

"""SQL for jobs, their events (including every status transition) and Codex sessions."""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from llmgw_jupyter.errors import ErrorCategory
from llmgw_jupyter.records import (
    TERMINAL_STATUSES,
    JobEvent,
    JobRecord,
    JobStatus,
    SessionRecord,
    Usage,
)
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.rows import event_from_row, job_from_row

# Columns the runtime may change after insert; anything else is immutable history.
_UPDATABLE = frozenset(
    {
        "argv_json",
        "working_dir",
        "queued_at",
        "started_at",
        "finished_at",
        "exit_code",
        "pid",
        "pid_start_time",
        "runtime_id",
        "session_id",
        "parent_session_id",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "reasoning_output_tokens",
        "cost_usd",
        "final_message",
        "error_category",
        "error_message",
        "cancel_reason",
        "stdout_bytes",
        "stderr_bytes",
    }
)

EventRow = tuple[float, str, str, dict[str, Any]]  # ts, type, summary, data
UNSTARTED_STATUSES = (JobStatus.QUEUED, JobStatus.AWAITING_APPROVAL)



# The panel's usage totals: read from the covering index ``jobs_usage`` alone (schema.py).
USAGE_TOTALS_SQL = (
    "SELECT caller, provider, COUNT(*) AS jobs,"
    " COALESCE(SUM(input_tokens), 0) AS input_tokens,"
    " COALESCE(SUM(cached_input_tokens), 0) AS cached_input_tokens,"
    " COALESCE(SUM(output_tokens), 0) AS output_tokens,"
    " COALESCE(SUM(reasoning_output_tokens), 0) AS reasoning_output_tokens,"
    " SUM(cost_usd) AS cost_usd, COUNT(cost_usd) AS priced_jobs"
    " FROM jobs {where} GROUP BY caller, provider ORDER BY caller, provider"
)


class SessionSighting(NamedTuple):
    """A run named its session: the job it belongs to and the sessions table learn of it."""

    session_id: str
    provider: str
    caller: str
    parent_session_id: str | None
    working_dir: str | None
    job_id: str
    ts: float


class IdempotencyConflict(Exception):
    """A job with this caller and idempotency key already exists."""

    def __init__(self, existing: JobRecord) -> None:
        super().__init__(existing.id)
        self.existing = existing


EVENT_CACHE_SIZE = 20_000


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._events: OrderedDict[tuple[str, int], JobEvent] = OrderedDict()

    # -- jobs -----------------------------------------------------------------------------
    def insert_job(self, values: dict[str, Any], first_event: EventRow) -> JobRecord:
        """Insert a job and its first status event atomically; a repeated key raises."""
        columns = ", ".join(values)
        marks = ", ".join(f":{name}" for name in values)
        with self.db.transaction(immediate=True) as conn:
            key = values.get("idempotency_key")
            if key is not None:
                row = conn.execute(
                    "SELECT * FROM jobs WHERE caller = ? AND idempotency_key = ?",
                    (values["caller"], key),
                ).fetchone()
                if row is not None:
                    raise IdempotencyConflict(job_from_row(row))
            # The first event's sequence number goes in with the row: one statement, not three.
            [row] = conn.execute(
                f"INSERT INTO jobs ({columns}, last_seq) VALUES ({marks}, 1) RETURNING *", values
            ).fetchall()
            self._insert_events(conn, values["id"], 1, [first_event])
        return job_from_row(row)

    def find_by_idempotency_key(self, caller: str, key: str) -> JobRecord | None:
        row = self.db.query_one(
            "SELECT * FROM jobs WHERE caller = ? AND idempotency_key = ?", (caller, key)
        )
        return job_from_row(row) if row is not None else None

    def get_job(self, job_id: str) -> JobRecord | None:
        row = self.db.query_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return job_from_row(row) if row is not None else None

    def update_job(self, job_id: str, **fields: Any) -> None:
        self._check_columns(fields)
        if not fields:
            return
        assignments = ", ".join(f"{name} = :{name}" for name in fields)
        self.db.execute(f"UPDATE jobs SET {assignments} WHERE id = :_id", {**fields, "_id": job_id})

    def transition(
        self,
        job_id: str,
        status: JobStatus,
        ts: float,
        *,
        expect: Iterable[JobStatus] | None = None,
        summary: str = "",
        detail: dict[str, Any] | None = None,
        **fields: Any,
    ) -> JobRecord | None:
        """Move a job to ``status`` and record the transition as an event, atomically.

        With ``expect``, the move happens only from one of those states (returns None otherwise),
        which is how a cancel racing a finish is settled without locks in the runtime.
        """
        row = self._move(job_id, status, ts, expect, summary, detail, fields, returning=["*"])
        return job_from_row(row) if row is not None else None

    def transition_seq(
        self,
        job_id: str,
        status: JobStatus,
        ts: float,
        *,
        expect: Iterable[JobStatus] | None = None,
        summary: str = "",
        detail: dict[str, Any] | None = None,
        **fields: Any,
    ) -> int | None:
        """``transition`` for a caller that needs only the job's new last sequence number (to
        wake its waiters): the row is not read back and parsed (its argv alone, a bubblewrap
        command line, is a hundred strings)."""
        row = self._move(job_id, status, ts, expect, summary, detail, fields)
        return int(row[0]) if row is not None else None

    def _move(
        self,
        job_id: str,
        status: JobStatus,
        ts: float,
        expect: Iterable[JobStatus] | None,
        summary: str,
        detail: dict[str, Any] | None,
        fields: dict[str, Any],
        *,
        returning: Sequence[str] = (),
    ) -> sqlite3.Row | None:
        self._check_columns(fields)
        assignments = ", ".join(
            ["status = :status", "updated_at = :ts", *(f"{n} = :{n}" for n in fields)]
        )
        params: dict[str, Any] = {**fields, "status": status.value, "ts": ts, "_id": job_id}
        where = "id = :_id"
        if expect is not None:
            allowed = [s.value for s in expect]
            where += " AND status IN (" + ", ".join(f":_s{i}" for i in range(len(allowed))) + ")"
            params.update({f"_s{i}": value for i, value in enumerate(allowed)})
        data = {"status": status.value, **(detail or {})}
        event = (ts, "job.status", summary or status.value, data)
        with self.db.transaction(immediate=True) as conn:
            # The move, the event's sequence number and what is returned: one statement.
            rows = conn.execute(
                f"UPDATE jobs SET {assignments}, last_seq = last_seq + 1 WHERE {where}"
                f" RETURNING {', '.join(['last_seq', *returning])}",
                params,
            ).fetchall()
            if not rows:
                return None
            self._insert_events(conn, job_id, int(rows[0][0]), [event])
        row: sqlite3.Row = rows[0]
        return row

    def end_unstarted(
        self,
        job_id: str,
        status: JobStatus,
        ts: float,
        *,
        message: str | None = None,
        category: ErrorCategory | None = None,
        cancel_reason: str | None = None,
    ) -> JobRecord | None:
        """End a job that never ran (cancelled, refused at launch, or the gateway stopped).

        Only from awaiting_approval or queued (None otherwise). The status event's summary is
        the failure's message, else the cancel reason, else the status."""
        return self.transition(
            job_id,
            status,
            ts,
            expect=UNSTARTED_STATUSES,
            finished_at=ts,
            error_category=category.value if category is not None else None,
            error_message=message,
            cancel_reason=cancel_reason,
            summary=(message if category is not None else None) or cancel_reason or status.value,
        )

    def list_jobs(
        self,
        *,
        statuses: Sequence[str] | None = None,
        provider: str | None = None,
        caller: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[JobRecord], int]:
        clauses: list[str] = []
        params: list[Any] = []
        if statuses:
            clauses.append("status IN (" + ", ".join("?" for _ in statuses) + ")")
            params.extend(statuses)
        if provider:
            clauses.append("provider = ?")
            params.append(provider)
        if caller:
            clauses.append("caller = ?")
            params.append(caller)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        total = self.db.query_one(f"SELECT COUNT(*) FROM jobs {where}", params)
        rows = self.db.query(
            f"SELECT * FROM jobs {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [job_from_row(r) for r in rows], int(total[0]) if total else 0

    def jobs_in(self, statuses: Iterable[JobStatus]) -> list[JobRecord]:
        values = [s.value for s in statuses]
        rows = self.db.query(
            "SELECT * FROM jobs WHERE status IN (" + ", ".join("?" for _ in values) + ")"
            " ORDER BY created_at, rowid",
            values,
        )
        return [job_from_row(r) for r in rows]

    def count_by_status(self, caller: str | None = None) -> dict[str, int]:
        if caller is None:
            rows = self.db.query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        else:
            rows = self.db.query(
                "SELECT status, COUNT(*) AS n FROM jobs WHERE caller = ? GROUP BY status", (caller,)
            )
        return {row["status"]: row["n"] for row in rows}

    def usage_totals(self, since: float | None = None) -> list[dict[str, Any]]:
        """Usage summed per (caller, provider), one GROUP BY over the jobs (created at or after
        ``since``, if given): the panel's totals. ``cost_usd`` is None where no job of the group
        reported a cost; ``priced_jobs`` says how many did (Codex reports none)."""
        where, params = ("WHERE created_at >= ?", [since]) if since is not None else ("", [])
        rows = self.db.query(USAGE_TOTALS_SQL.format(where=where), params)
        return [dict(row) for row in rows]

    def finished_before(self, ts: float) -> list[str]:
        terminal = [s.value for s in TERMINAL_STATUSES]
        rows = self.db.query(
            "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? AND status IN ("
            + ", ".join("?" for _ in terminal)
            + ")",
            [ts, *terminal],
        )
        return [row["id"] for row in rows]

    def delete_jobs(self, job_ids: Sequence[str]) -> None:
        with self.db.transaction(immediate=True) as conn:
            conn.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in job_ids])

    # -- events ---------------------------------------------------------------------------
    def append_events(
        self,
        job_id: str,
        events: Sequence[EventRow],
        *,
        usage: Usage | None = None,
        session: SessionSighting | None = None,
    ) -> int:
        """Store parsed events with the next sequence numbers; returns the new last seq (-1 when
        there was nothing to store).

        ``usage`` (what the run reported so far) is stored in the same transaction, so budgets
        can be charged while the job runs; so is ``session``, the session the run named first
        (the job's ``session_id`` and the sessions table, as ``record_session``)."""
        if not events and session is None:
            return -1
        assignments = ["last_seq = last_seq + ?"]
        params: list[Any] = [len(events)]
        if usage is not None:
            figures = usage.to_dict()
            assignments += [f"{name} = ?" for name in figures]
            params += figures.values()
        if session is not None:
            assignments.append("session_id = ?")
            params.append(session.session_id)
        with self.db.transaction(immediate=True) as conn:
            rows = conn.execute(
                f"UPDATE jobs SET {', '.join(assignments)} WHERE id = ? RETURNING last_seq",
                (*params, job_id),
            ).fetchall()
            if not rows:
                raise ValueError(f"no job {job_id}")
            last = int(rows[0][0])
            if session is not None:
                self._upsert_session(conn, session)
            if events:
                self._insert_events(conn, job_id, last - len(events) + 1, events)
        return last

    @staticmethod
    def _insert_events(conn: Any, job_id: str, first: int, events: Sequence[EventRow]) -> None:
        """Insert ``events`` numbered from ``first`` (the job's last_seq is already moved)."""
        conn.executemany(
            "INSERT INTO job_events (job_id, seq, ts, type, summary, data_json)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (job_id, first + i, ts, kind, summary, json.dumps(data, separators=(",", ":")))
                for i, (ts, kind, summary, data) in enumerate(events)
            ],
        )

    def events_after(self, job_id: str, after_seq: int, limit: int) -> list[JobEvent]:
        rows = self.db.query(
            "SELECT * FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after_seq, limit),
        )
        return [self._event(row) for row in rows]

    def _event(self, row: sqlite3.Row) -> JobEvent:
        """Events never change once stored: parse each one once (watchers poll the same ones)."""
        key = (row["job_id"], row["seq"])
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = event_from_row(row)
            if len(self._events) > EVENT_CACHE_SIZE:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(key)
        return event

    # -- sessions -------------------------------------------------------------------------
    def record_session(
        self,
        *,
        session_id: str,
        provider: str,
        caller: str,
        parent_session_id: str | None,
        working_dir: str | None,
        job_id: str,
        ts: float,
    ) -> None:
        """First sight of a session creates it; later jobs on it (resume) only touch it."""
        sighting = SessionSighting(
            session_id, provider, caller, parent_session_id, working_dir, job_id, ts
        )
        self._upsert_session(self.db, sighting)

    @staticmethod
    def _upsert_session(conn: Any, session: SessionSighting) -> None:
        conn.execute(
            "INSERT INTO sessions (session_id, provider, caller, parent_session_id, working_dir,"
            " created_at, created_by_job, last_job_id, last_used_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (session_id) DO UPDATE SET last_job_id = excluded.last_job_id,"
            " last_used_at = excluded.last_used_at",
            (
                session.session_id,
                session.provider,
                session.caller,
                session.parent_session_id,
                session.working_dir,
                session.ts,
                session.job_id,
                session.job_id,
                session.ts,
            ),
        )

    def get_session(self, session_id: str) -> SessionRecord | None:
        row = self.db.query_one("SELECT * FROM sessions WHERE session_id = ?", (session_id,))
        return self._session(row) if row is not None else None

    def list_sessions(
        self, caller: str | None = None, limit: int = 200, offset: int = 0
    ) -> list[SessionRecord]:
        where, params = ("WHERE caller = ?", [caller]) if caller else ("", [])
        rows = self.db.query(
            f"SELECT * FROM sessions {where} ORDER BY last_used_at DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        sessions = [self._session(r) for r in rows]
        if sessions:
            ids = [s.session_id for s in sessions]
            # A caller's view lists only its own forks: another caller's fork ids are not its.
            mine, mine_params = (" AND caller = ?", [caller]) if caller else ("", [])
            children = self.db.query(
                "SELECT session_id, parent_session_id FROM sessions WHERE parent_session_id IN ("
                + ", ".join("?" for _ in ids)
                + f"){mine} ORDER BY created_at",
                [*ids, *mine_params],
            )
            by_parent: dict[str, list[str]] = {}
            for child in children:
                by_parent.setdefault(child["parent_session_id"], []).append(child["session_id"])
            for session in sessions:
                session.children = by_parent.get(session.session_id, [])
        return sessions

    def latest_session(
        self, *, caller: str | None, provider: str, working_dir: str | None = None
    ) -> SessionRecord | None:
        clauses, params = ["provider = ?"], [provider]
        if caller:
            clauses.append("caller = ?")
            params.append(caller)
        if working_dir:
            clauses.append("working_dir = ?")
            params.append(working_dir)
        row = self.db.query_one(
            "SELECT * FROM sessions WHERE "
            + " AND ".join(clauses)
            + " ORDER BY last_used_at DESC LIMIT 1",
            params,
        )
        return self._session(row) if row is not None else None

    @staticmethod
    def _session(row: Any) -> SessionRecord:
        return SessionRecord(
            session_id=row["session_id"],
            provider=row["provider"],
            caller=row["caller"],
            parent_session_id=row["parent_session_id"],
            working_dir=row["working_dir"],
            created_at=row["created_at"],
            created_by_job=row["created_by_job"],
            last_job_id=row["last_job_id"],
            last_used_at=row["last_used_at"],
        )

    @staticmethod
    def _check_columns(fields: dict[str, Any]) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable job columns: {sorted(unknown)}")

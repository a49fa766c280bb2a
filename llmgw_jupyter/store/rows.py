"""Row mapping: SQLite rows of the store to the domain records, kept inside the store."""

from __future__ import annotations

import json
import sqlite3

from llmgw_jupyter.errors import ErrorCategory
from llmgw_jupyter.records import JobEvent, JobRecord, JobStatus, Usage


def job_from_row(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        provider=row["provider"],
        tool=row["tool"],
        kind=row["kind"],
        caller=row["caller"],
        status=JobStatus(row["status"]),
        args=json.loads(row["args_json"]),
        argv=json.loads(row["argv_json"]) if row["argv_json"] else None,
        working_dir=row["working_dir"],
        idempotency_key=row["idempotency_key"],
        prompt_preview=row["prompt_preview"],
        created_at=row["created_at"],
        queued_at=row["queued_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=row["updated_at"],
        exit_code=row["exit_code"],
        pid=row["pid"],
        pid_start_time=row["pid_start_time"],
        runtime_id=row["runtime_id"],
        session_id=row["session_id"],
        parent_session_id=row["parent_session_id"],
        usage=Usage(
            row["input_tokens"],
            row["cached_input_tokens"],
            row["output_tokens"],
            row["reasoning_output_tokens"],
            row["cost_usd"],
        ),
        final_message=row["final_message"],
        error_category=ErrorCategory(row["error_category"]) if row["error_category"] else None,
        error_message=row["error_message"],
        cancel_reason=row["cancel_reason"],
        last_seq=row["last_seq"],
        stdout_bytes=row["stdout_bytes"],
        stderr_bytes=row["stderr_bytes"],
    )


def event_from_row(row: sqlite3.Row) -> JobEvent:
    return JobEvent(
        row["job_id"],
        row["seq"],
        row["ts"],
        row["type"],
        row["summary"],
        json.loads(row["data_json"]),
    )

"""Plain records of jobs, events and sessions: the domain every layer shares (no SQL here).

The store maps rows to these (``store/rows.py``); the JSON views here are checked against the
wire contract (``contract.py``) that every adapter serves."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from llmgw_jupyter.errors import ErrorCategory


class JobStatus(str, Enum):
    AWAITING_APPROVAL = "awaiting_approval"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.TIMED_OUT,
        JobStatus.INTERRUPTED,
    }
)
ACTIVE_STATUSES = frozenset({JobStatus.AWAITING_APPROVAL, JobStatus.QUEUED, JobStatus.RUNNING})
# The same sets as the strings in views, changes and queries (one definition for every layer).
TERMINAL_STATUS_VALUES = frozenset(status.value for status in TERMINAL_STATUSES)
ACTIVE_STATUS_VALUES = frozenset(status.value for status in ACTIVE_STATUSES)

JobKind = str  # "exec" | "resume" | "fork"
JOB_KINDS = ("exec", "resume", "fork")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _iso(ts)


@functools.lru_cache(maxsize=8192)
def _iso(ts: float) -> str:
    """Job views format the same few timestamps on every poll."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Usage:
    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_output_tokens: int | None = None
    cost_usd: float | None = None  # of this run, where the CLI reports it (Claude Code does)

    @property
    def total_tokens(self) -> int:
        """What a ``tokens`` budget is charged: input (cached included) plus output."""
        return (self.input_tokens or 0) + (self.output_tokens or 0)

    def to_dict(self) -> dict[str, int | float | None]:
        return {
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_output_tokens": self.reasoning_output_tokens,
            "cost_usd": self.cost_usd,
        }


# Arguments small enough for every view; the rest only in full views (see JobRecord.to_dict).
LIGHT_ARG_KEYS = (
    "model",
    "sandbox",
    "working_dir",
    "add_dirs",
    "session_id",
    "timeout_seconds",
)


@dataclass
class JobSpec:
    """What a caller asks the runtime to run; ``args`` are already validated by the tool layer."""

    provider: str
    tool: str
    kind: JobKind
    args: dict[str, Any]
    caller: str = "owner"
    idempotency_key: str | None = None
    hold: bool = False  # True: start in awaiting_approval until released


@dataclass
class JobRecord:
    id: str
    provider: str
    tool: str
    kind: str
    caller: str
    status: JobStatus
    args: dict[str, Any]
    argv: list[str] | None
    working_dir: str | None
    idempotency_key: str | None
    prompt_preview: str
    created_at: float
    queued_at: float | None
    started_at: float | None
    finished_at: float | None
    updated_at: float
    exit_code: int | None
    pid: int | None
    pid_start_time: float | None
    runtime_id: str | None
    session_id: str | None
    parent_session_id: str | None
    usage: Usage
    final_message: str | None
    error_category: ErrorCategory | None
    error_message: str | None
    cancel_reason: str | None
    last_seq: int
    stdout_bytes: int
    stderr_bytes: int

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    def to_dict(self, *, include_args: bool = True) -> dict[str, Any]:
        """The one JSON view of a job (REST, MCP structured content, widgets, the lab panel).

        ``include_args=False`` is the light view for lists and streams: big arguments (prompt,
        output schema, config overrides) are named in ``omitted_args`` and the command line is
        left out; ``prompt_preview`` is always there."""
        args: dict[str, Any] = self.args
        omitted: list[str] = []
        if not include_args:
            args = {key: self.args[key] for key in LIGHT_ARG_KEYS if key in self.args}
            omitted = sorted(set(self.args) - set(LIGHT_ARG_KEYS))
        error = None
        if self.error_category is not None or self.error_message:
            error = {
                "category": self.error_category.value if self.error_category else None,
                "message": self.error_message,
            }
        return {
            "id": self.id,
            "provider": self.provider,
            "tool": self.tool,
            "kind": self.kind,
            "caller": self.caller,
            "status": self.status.value,
            "args": args,
            "omitted_args": omitted,
            "argv": self.argv if include_args else None,
            "working_dir": self.working_dir,
            "idempotency_key": self.idempotency_key,
            "prompt_preview": self.prompt_preview,
            "created_at": iso(self.created_at),
            "queued_at": iso(self.queued_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "updated_at": iso(self.updated_at),
            "exit_code": self.exit_code,
            "pid": self.pid,
            "session_id": self.session_id,
            "parent_session_id": self.parent_session_id,
            "usage": self.usage.to_dict(),
            "final_message": self.final_message,
            "error": error,
            "cancel_reason": self.cancel_reason,
            "last_seq": self.last_seq,
            "stdout_bytes": self.stdout_bytes,
            "stderr_bytes": self.stderr_bytes,
        }


@dataclass
class JobEvent:
    job_id: str
    seq: int
    ts: float
    type: str
    summary: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "seq": self.seq,
            "ts": iso(self.ts),
            "type": self.type,
            "summary": self.summary,
            "data": self.data,
        }


@dataclass
class SessionRecord:
    session_id: str
    provider: str
    caller: str
    parent_session_id: str | None
    working_dir: str | None
    created_at: float
    created_by_job: str | None
    last_job_id: str | None
    last_used_at: float
    children: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "provider": self.provider,
            "caller": self.caller,
            "parent_session_id": self.parent_session_id,
            "children": list(self.children),
            "working_dir": self.working_dir,
            "created_at": iso(self.created_at),
            "created_by_job": self.created_by_job,
            "last_job_id": self.last_job_id,
            "last_used_at": iso(self.last_used_at),
        }


@dataclass
class OutputPage:
    stream: str
    offset: int
    data: str
    next_offset: int
    size: int
    eof: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "offset": self.offset,
            "data": self.data,
            "next_offset": self.next_offset,
            "size": self.size,
            "eof": self.eof,
        }

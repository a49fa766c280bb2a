"""How a job ended: why the runtime stopped it, and the final status and fields that follow.

A pure decision (no store, no process), so every ending can be read in one place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from llmgw_jupyter.errors import ErrorCategory
from llmgw_jupyter.providers.base import StreamParser
from llmgw_jupyter.records import JobStatus


class StopReason(str, Enum):
    """Why the runtime stopped a running job (never stored: it decides the final status).

    What a caller gave as the reason of a cancel is stored as ``cancel_reason``, free text."""

    CANCEL = "cancel"
    WALL_TIMEOUT = "wall_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    OVERFLOW = "overflow"
    SHUTDOWN = "shutdown"
    DISK_FULL = "disk_full"  # output or events could not be stored: the disk is full
    WRITE_ERROR = "write_error"  # output or events could not be stored for another reason


# Stops after which nothing more can be stored: the pumps keep draining but stop parsing.
STORAGE_STOPS = frozenset({StopReason.DISK_FULL, StopReason.WRITE_ERROR})


@dataclass(frozen=True)
class Limits:
    """The limits a stop refers to, for its message."""

    wall_seconds: float
    idle_seconds: float
    output_cap_bytes: int


def final_status(
    stop: StopReason | None,
    *,
    cancel_reason: str | None,
    error_detail: str | None,
    parser: StreamParser,
    exit_code: int | None,
    output_sizes: dict[str, int],
    stderr_tail: bytes,
    limits: Limits,
) -> tuple[JobStatus, dict[str, Any]]:
    """The status a run settles to and the job fields to store with it."""
    fields: dict[str, Any] = {
        "finished_at": time.time(),
        "exit_code": exit_code,
        "final_message": parser.final_message,
        "stdout_bytes": output_sizes["stdout"],
        "stderr_bytes": output_sizes["stderr"],
    }
    if parser.usage is not None:
        fields.update(parser.usage.to_dict())
    if parser.session_id:
        fields["session_id"] = parser.session_id
    if stop is StopReason.CANCEL:
        fields["cancel_reason"] = cancel_reason
        return JobStatus.CANCELLED, fields
    if stop is StopReason.SHUTDOWN:
        fields["cancel_reason"] = cancel_reason
        fields["error_message"] = "the gateway stopped while the job was running"
        return (JobStatus.CANCELLED if cancel_reason else JobStatus.INTERRUPTED), fields
    if stop in (StopReason.WALL_TIMEOUT, StopReason.IDLE_TIMEOUT):
        fields["error_category"] = ErrorCategory.TIMEOUT.value
        fields["error_message"] = (
            f"ran longer than {limits.wall_seconds:g} s (wall-clock timeout)"
            if stop is StopReason.WALL_TIMEOUT
            else f"no output for {limits.idle_seconds:g} s (idle timeout)"
        )
        return JobStatus.TIMED_OUT, fields
    if stop in STORAGE_STOPS:
        fields["error_category"] = (
            ErrorCategory.DISK_FULL if stop is StopReason.DISK_FULL else ErrorCategory.CLI_ERROR
        ).value
        fields["error_message"] = (
            f"could not store the job's output ({error_detail}); the job was stopped "
            "and what was captured before is kept"
        )
        return JobStatus.FAILED, fields
    if stop is StopReason.OVERFLOW:
        fields["error_category"] = ErrorCategory.OUTPUT_OVERFLOW.value
        fields["error_message"] = (
            f"output exceeded the cap of {limits.output_cap_bytes} bytes; the captured part is kept"
        )
        return JobStatus.FAILED, fields
    verdict = parser.verdict(exit_code, stderr_tail.decode("utf-8", "replace"))
    if verdict.succeeded:
        return JobStatus.SUCCEEDED, fields
    fields["error_category"] = (verdict.category or ErrorCategory.CLI_ERROR).value
    fields["error_message"] = verdict.message
    return JobStatus.FAILED, fields


def status_summary(status: JobStatus, fields: dict[str, Any]) -> str:
    """The summary of the final ``job.status`` event."""
    message = fields.get("error_message") or fields.get("cancel_reason")
    return f"{status.value}: {message}" if message else status.value

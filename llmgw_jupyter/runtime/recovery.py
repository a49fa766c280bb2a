"""What a runtime finds when it starts, and what it throws away later.

Jobs left queued or running by a runtime that is gone are never re-run: a run the executor can
follow again is handed back to be supervised, any other one is stopped (if it is still the same
process) and its job ends ``interrupted`` with its output kept. Finished jobs older than the
retention age are deleted with their output files.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmgw_jupyter.records import JobRecord, JobStatus
from llmgw_jupyter.runtime import output as job_output
from llmgw_jupyter.runtime.executor import Execution, ExecutionRef, Executor
from llmgw_jupyter.runtime.notifier import JobNotifier
from llmgw_jupyter.store.jobs import JobStore

RETENTION_INTERVAL_SECONDS = 3600.0


@dataclass(frozen=True)
class Reattached:
    """A run left by an earlier runtime that the executor follows again."""

    record: JobRecord
    execution: Execution


def recover(
    store: JobStore, executor: Executor, notifier: JobNotifier, data_dir: Path
) -> list[Reattached]:
    """Settle the jobs an earlier runtime left unfinished; returns the runs to supervise."""
    now = time.time()
    reattached: list[Reattached] = []
    for record in store.jobs_in([JobStatus.QUEUED, JobStatus.RUNNING]):
        directory = job_output.job_dir(data_dir, record.id)
        message = "the gateway stopped before the job started; it was not re-run"
        if record.status is JobStatus.RUNNING:
            ref = ExecutionRef(record.pid, record.pid_start_time)
            execution = executor.reattach(ref, directory)
            if execution is not None:
                reattached.append(Reattached(record, execution))
                continue
            message = "the gateway stopped while the job was running; output so far is kept"
            if executor.stop_orphan(ref):
                message += f" (its process {record.pid} was still alive and was stopped)"
        done = store.transition(
            record.id,
            JobStatus.INTERRUPTED,
            now,
            expect=[JobStatus.QUEUED, JobStatus.RUNNING],
            finished_at=now,
            error_message=message,
            summary=message,
            stdout_bytes=job_output.output_size(directory, "stdout"),
            stderr_bytes=job_output.output_size(directory, "stderr"),
        )
        notifier.notify_record(done)
    return reattached


def prune(
    store: JobStore, data_dir: Path, retention_seconds: float | None, now: float | None = None
) -> int:
    """Delete finished jobs older than the retention age, with their output files."""
    if not retention_seconds:
        return 0
    cutoff = (now or time.time()) - retention_seconds
    job_ids = store.finished_before(cutoff)
    if job_ids:
        store.delete_jobs(job_ids)
        for job_id in job_ids:
            job_output.remove_job_dir(job_output.job_dir(data_dir, job_id))
    return len(job_ids)


async def retention_loop(prune_now: Callable[[], object]) -> None:
    """Prune once an hour for as long as the runtime runs."""
    while True:
        await asyncio.sleep(RETENTION_INTERVAL_SECONDS)
        prune_now()

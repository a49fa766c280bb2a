"""What a runtime finds when it starts, and what it throws away later.

Jobs left queued or running by a runtime that is gone are never re-run: a run the executor can
follow again is handed back to be supervised, any other one is stopped (if it is still the same
process) and its job ends ``interrupted`` with its output kept. Finished jobs older than the
retention age are deleted with their output files.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from llmgw_jupyter.providers.base import Provider, StreamParser
from llmgw_jupyter.records import JobRecord, JobStatus
from llmgw_jupyter.runtime import output as job_output
from llmgw_jupyter.runtime.detached import DetachedExecution, stop_unrecorded_run
from llmgw_jupyter.runtime.executor import Execution, ExecutionRef, Executor
from llmgw_jupyter.runtime.notifier import JobNotifier
from llmgw_jupyter.runtime.outcome import StopReason
from llmgw_jupyter.runtime.ray_executor import RayExecution
from llmgw_jupyter.runtime.reader import MAX_LINE_BYTES, STDERR_TAIL_BYTES
from llmgw_jupyter.runtime.running import RunningJob
from llmgw_jupyter.runtime.supervisor import JobSupervisor
from llmgw_jupyter.store.jobs import JobStore

RETENTION_INTERVAL_SECONDS = 3600.0


@dataclass(frozen=True)
class Reattached:
    """A run left by an earlier runtime that the executor follows again."""

    record: JobRecord
    execution: Execution


def recover(
    store: JobStore,
    executor: Executor,
    notifier: JobNotifier,
    data_dir: Path,
    *,
    followers: Sequence[Executor] = (),
) -> list[Reattached]:
    """Settle the jobs an earlier runtime left unfinished; returns the runs to supervise.

    ``followers``: other executors asked to follow a run the configured one cannot (a detached
    run left by a runtime configured otherwise must still be followed, never orphaned)."""
    now = time.time()
    reattached: list[Reattached] = []
    for record in store.jobs_in([JobStatus.QUEUED, JobStatus.RUNNING]):
        directory = job_output.job_dir(data_dir, record.id)
        message = "the gateway stopped before the job started; it was not re-run"
        if record.status is JobStatus.QUEUED and stop_unrecorded_run(directory):
            message = "the gateway stopped as the job started; it was stopped and not re-run"
        if record.status is JobStatus.RUNNING:
            ref = ExecutionRef(record.pid, record.pid_start_time)
            execution = executor.reattach(ref, directory)
            for other in followers:
                execution = execution or other.reattach(ref, directory)
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


# -- detached runs -------------------------------------------------------------------------------
log = logging.getLogger(__name__)


async def resume_detached(
    supervisor: JobSupervisor,
    running: RunningJob,
    *,
    record: JobRecord,
    execution: DetachedExecution | RayExecution,
) -> None:
    """Supervise a detached run (or a Ray job: its output is in the job's files too) again:
    a fresh parser first reads the stdout lines whose events
    are stored (without storing them again), so the final message, session and usage come out
    right; the run's stdout is then followed from the end of those lines, so no event is lost
    (the supervisor kept writing while no runtime was up) or repeated (seq continues)."""
    try:
        directory = supervisor.job_dir(record.id)
        provider = supervisor.providers[record.provider]
        parser = provider.new_parser()
        stdout_from = replay_stdout(
            parser,
            directory / job_output.STREAM_FILES["stdout"],
            parsed_events_stored(supervisor.store, record.id),
        )
        stderr_from = max(0, job_output.output_size(directory, "stderr") - STDERR_TAIL_BYTES)
        execution.resume_from({"stdout": stdout_from, "stderr": stderr_from})
        running.events_stored = record.last_seq
        running.session_recorded = record.session_id is not None
        execution.on_exit = functools.partial(_stopped_by_supervisor, running)
        output = job_output.CappedOutput(
            directory, supervisor.config.output_cap_bytes, persisted=True
        )
        output.sizes = {"stdout": stdout_from, "stderr": stderr_from}
        following = copy.copy(supervisor)
        following.providers = {
            **supervisor.providers,
            record.provider: cast(Provider, _Replayed(provider, parser)),
        }
        await following.follow(running, record, execution, output)
    except Exception:
        log.exception("supervising job %s again failed", running.job_id)
        execution.release()
        supervisor._abandon(running.job_id)


_SUPERVISOR_STOPS = {
    "wall_timeout": StopReason.WALL_TIMEOUT,
    "overflow": StopReason.OVERFLOW,
    "write_error": StopReason.WRITE_ERROR,
}


def _stopped_by_supervisor(running: RunningJob, exit_record: dict[str, Any]) -> None:
    """The supervisor stopped the run itself (no runtime was watching): the job ends for that
    reason (timed out, over the cap), not as a CLI failure."""
    reason = _SUPERVISOR_STOPS.get(str(exit_record.get("stopped")))
    if reason is not None:
        running.request_stop(reason, detail=exit_record.get("error"))


class _Replayed:
    """A job's provider whose parser is the one that already read the stored output."""

    def __init__(self, provider: Provider, parser: StreamParser) -> None:
        self._provider = provider
        self._parser = parser

    def new_parser(self) -> StreamParser:
        return self._parser

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)


def parsed_events_stored(store: JobStore, job_id: str) -> int:
    """How many of the job's events came from its output (every other one is a status event)."""
    count, after = 0, 0
    while events := store.events_after(job_id, after, 1000):
        count += sum(1 for event in events if event.type != "job.status")
        after = events[-1].seq
    return count


def replay_stdout(parser: StreamParser, path: Path, events: int) -> int:
    """Feed ``parser`` the lines that produced the first ``events`` events (as the output reader
    did: over-long lines are skipped); returns the offset just after them."""
    offset = produced = 0
    if events <= 0:
        return 0
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return 0
    with handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # a line still being written: followed, not replayed
            offset += len(line)
            if len(line) - 1 <= MAX_LINE_BYTES:
                produced += len(parser.feed(line[:-1]))
            if produced >= events:
                break
    return offset


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

"""One job from launch to its final status: start it through the executor, follow its output
(``reader.py``), enforce its limits (cancel, wall-clock, idle; the reader flags the output cap
and a disk that cannot take more), stop it, and settle how it ended (``outcome.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from llmgw_jupyter.errors import ErrorCategory, GatewayError
from llmgw_jupyter.providers.base import Provider, StreamParser
from llmgw_jupyter.records import JobRecord, JobStatus
from llmgw_jupyter.runtime import output as job_output
from llmgw_jupyter.runtime.admission import Admission
from llmgw_jupyter.runtime.config import RuntimeConfig
from llmgw_jupyter.runtime.datadir import DiskReserve, is_disk_full
from llmgw_jupyter.runtime.executor import Execution, Executor, LaunchRequest
from llmgw_jupyter.runtime.launch import prepare_launch
from llmgw_jupyter.runtime.notifier import JobChange, JobNotifier
from llmgw_jupyter.runtime.outcome import Limits, StopReason, final_status, status_summary
from llmgw_jupyter.runtime.process import file_maker, off_loop
from llmgw_jupyter.runtime.reader import OutputReader
from llmgw_jupyter.runtime.running import RunningJob
from llmgw_jupyter.store.jobs import JobStore

PIPE_DRAIN_SECONDS = 5.0

log = logging.getLogger(__name__)


class JobSupervisor:
    """Runs jobs one at a time each (one call of ``run`` per job, many at once)."""

    def __init__(
        self,
        *,
        config: RuntimeConfig,
        providers: dict[str, Provider],
        executor: Executor,
        admission: Admission,
        store: JobStore,
        notifier: JobNotifier,
        reserve: DiskReserve,
        data_dir: Path,
        runtime_id: str,
    ) -> None:
        self.config = config
        self.providers = providers
        self.executor = executor
        self.admission = admission
        self.store = store
        self.notifier = notifier
        self.reserve = reserve
        self.data_dir = data_dir
        self.runtime_id = runtime_id

    def job_dir(self, job_id: str) -> Path:
        return job_output.job_dir(self.data_dir, job_id)

    # -- launch -------------------------------------------------------------------------------
    async def run(self, running: RunningJob) -> None:
        """Launch a queued job and supervise it to its end (a job no longer queued is left).

        Whatever goes wrong in here, the job is not left ``queued`` or ``running``."""
        try:
            await self._launch_and_follow(running)
        except Exception:
            log.exception("supervising job %s failed", running.job_id)
            self._abandon(running.job_id)

    def _abandon(self, job_id: str) -> None:
        now = time.time()
        message = "the gateway failed while running the job (see its log); output so far is kept"
        with contextlib.suppress(sqlite3.Error):
            self.notifier.notify_record(
                self.store.transition(
                    job_id,
                    JobStatus.FAILED,
                    now,
                    expect=[JobStatus.QUEUED, JobStatus.RUNNING],
                    finished_at=now,
                    error_category=ErrorCategory.INTERNAL.value,
                    error_message=message,
                    summary=f"failed: {message}",
                )
            )

    async def _launch_and_follow(self, running: RunningJob) -> None:
        job_id = running.job_id
        record = self.store.get_job(job_id)
        if record is None or record.status is not JobStatus.QUEUED:
            return
        isolated = self.admission.isolated(record.caller)
        provider = self.providers[record.provider]
        job_dir = self.job_dir(job_id)

        def prepare() -> LaunchRequest:
            request = prepare_launch(
                record,
                provider,
                self.config,
                data_dir=self.data_dir,
                job_dir=job_dir,
                isolated=isolated,
            )
            # Every CLI here speaks on stdout: its file is made while the CLI starts (stderr's,
            # rarer, on its first byte).
            file_maker().submit(job_output.create_empty, job_dir, "stdout")
            return request

        try:
            self.admission.check_isolation(record.caller)
            # The job's directory and the provider's command: file system work, off the loop.
            request = await off_loop(prepare)
        except GatewayError as error:
            self._fail_unstarted(job_id, error.category, error.message)
            return
        except OSError as error:
            category = ErrorCategory.DISK_FULL if error.errno == errno.ENOSPC else None
            self._fail_unstarted(
                job_id, category or ErrorCategory.SPAWN_ERROR, f"could not prepare the job: {error}"
            )
            return
        try:
            execution = await self.executor.launch(request)
        except GatewayError as error:
            self._fail_unstarted(job_id, error.category, error.message)
            return
        except OSError as error:
            self._fail_unstarted(
                job_id, ErrorCategory.SPAWN_ERROR, f"could not start {request.argv[0]}: {error}"
            )
            return
        now = time.time()
        argv = list(execution.argv)
        last_seq = self.store.transition_seq(
            job_id,
            JobStatus.RUNNING,
            now,
            expect=[JobStatus.QUEUED],
            started_at=now,
            pid=execution.ref.pid,
            pid_start_time=execution.ref.start_time,
            argv_json=json.dumps(argv),
            runtime_id=self.runtime_id,
        )
        if last_seq is None:  # cancelled while spawning
            await execution.stop(self.config.kill_grace_seconds)
            await execution.wait()
            execution.release()
            return
        # The stored row, without reading it back: a queued job changes only by leaving queued.
        started = dataclasses.replace(
            record,
            status=JobStatus.RUNNING,
            started_at=now,
            updated_at=now,
            pid=execution.ref.pid,
            pid_start_time=execution.ref.start_time,
            argv=argv,
            runtime_id=self.runtime_id,
            last_seq=last_seq,
        )
        self.notifier.notify(JobChange(job_id, JobStatus.RUNNING.value, last_seq))
        output = job_output.CappedOutput(
            job_dir, self.config.output_cap_bytes, persisted=execution.persists_output
        )
        await self.follow(running, started, execution, output)

    def _fail_unstarted(self, job_id: str, category: ErrorCategory, message: str) -> None:
        self.notifier.notify_record(
            self.store.end_unstarted(
                job_id, JobStatus.FAILED, time.time(), message=message, category=category
            )
        )

    async def resume(self, running: RunningJob, *, record: JobRecord, execution: Execution) -> None:
        """Supervise a run an earlier runtime started, which the executor follows again: its
        output continues after what is on disk, its events after the stored ones."""
        try:
            await self._resume(running, record, execution)
        except Exception:
            log.exception("supervising job %s failed", running.job_id)
            self._abandon(running.job_id)

    async def _resume(self, running: RunningJob, record: JobRecord, execution: Execution) -> None:
        running.events_stored = record.last_seq
        running.session_recorded = record.session_id is not None
        output = job_output.CappedOutput.resume(
            self.job_dir(record.id),
            self.config.output_cap_bytes,
            persisted=execution.persists_output,
        )
        await self.follow(running, record, execution, output)

    # -- supervision --------------------------------------------------------------------------
    async def follow(
        self,
        running: RunningJob,
        record: JobRecord,
        execution: Execution,
        output: job_output.CappedOutput,
    ) -> None:
        """Supervise a running job's execution until it ended, then settle its final status."""
        parser = self.providers[record.provider].new_parser()
        reader = OutputReader(
            running=running,
            record=record,
            parser=parser,
            output=output,
            store=self.store,
            notifier=self.notifier,
            max_events=self.config.max_events_per_job,
        )
        pumps = [
            asyncio.ensure_future(reader.pump(stream, name))
            for name, stream in execution.streams.items()
        ]
        try:
            exit_code = await self._watch(running, record, execution)
            execution.release()
            _, pending = await asyncio.wait(pumps, timeout=PIPE_DRAIN_SECONDS)
            for task in pending:
                task.cancel()
        finally:
            output.close()  # also when following fails or stops (the files are not left open)
        self._settle(running, record, parser, exit_code, output, bytes(reader.stderr_tail))

    async def _watch(
        self, running: RunningJob, record: JobRecord, execution: Execution
    ) -> int | None:
        """Wait for the exit while enforcing cancel, wall-clock and idle limits."""
        wall = float(record.args.get("timeout_seconds") or self.config.wall_timeout_seconds)
        idle = self.config.idle_timeout_seconds
        started = time.monotonic()
        if record.started_at is not None:
            # An adopted run (after a restart) keeps the wall clock it started with.
            started -= max(0.0, time.time() - record.started_at)
        exited: asyncio.Future[Any] = asyncio.ensure_future(execution.wait())
        stopping: asyncio.Future[None] | None = None
        while not exited.done():
            if running.stop_reason is None:
                now = time.monotonic()
                if now - started >= wall:
                    running.stop_reason = StopReason.WALL_TIMEOUT
                elif now - running.last_output >= idle:
                    running.stop_reason = StopReason.IDLE_TIMEOUT
            if running.stop_reason is not None and stopping is None:
                stopping = asyncio.ensure_future(execution.stop(self.config.kill_grace_seconds))
            woken: asyncio.Future[Any] = running.next_wake()
            deadline = min(started + wall, running.last_output + idle) - time.monotonic()
            timeout = None if stopping is not None else max(deadline, 0.0) + 0.01
            await asyncio.wait({exited, woken}, timeout=timeout, return_when="FIRST_COMPLETED")
        if stopping is not None:
            stopping.cancel()
        return exited.result()

    # -- settling -----------------------------------------------------------------------------
    def _settle(
        self,
        running: RunningJob,
        record: JobRecord,
        parser: StreamParser,
        exit_code: int | None,
        output: job_output.CappedOutput,
        stderr_tail: bytes,
    ) -> None:
        if running.stop_reason is StopReason.DISK_FULL:
            self.reserve.release()  # room to record this ending
        status, fields = final_status(
            running.stop_reason,
            cancel_reason=running.cancel_reason,
            error_detail=running.error_detail,
            parser=parser,
            exit_code=exit_code,
            output_sizes=output.sizes,
            stderr_tail=stderr_tail,
            limits=Limits(
                wall_seconds=record.args.get("timeout_seconds") or self.config.wall_timeout_seconds,
                idle_seconds=self.config.idle_timeout_seconds,
                output_cap_bytes=self.config.output_cap_bytes,
            ),
        )
        try:
            last_seq = self.store.transition_seq(
                record.id,
                status,
                fields["finished_at"],
                expect=[JobStatus.RUNNING],
                summary=status_summary(status, fields),
                **fields,
            )
        except sqlite3.OperationalError as error:
            if not is_disk_full(error):
                raise
            self.reserve.release()
            self.notifier.notify_record(self._settle_without_space(record.id, str(error), fields))
            return
        if last_seq is not None:
            self.notifier.notify(JobChange(record.id, status.value, last_seq))

    def _settle_without_space(
        self, job_id: str, detail: str, fields: dict[str, Any]
    ) -> JobRecord | None:
        """A full disk refused the final record: with the reserve released, store how the job
        ended, so it is never left ``running`` (restart recovery covers a still-full disk)."""
        message = f"the gateway's disk is full ({detail}); the output captured so far is kept"
        fields = {**fields, "error_category": ErrorCategory.DISK_FULL.value}
        fields["error_message"] = message
        with contextlib.suppress(sqlite3.OperationalError):
            return self.store.transition(
                job_id,
                JobStatus.FAILED,
                fields["finished_at"],
                expect=[JobStatus.RUNNING],
                summary=f"failed: {message}",
                **fields,
            )
        return self.store.get_job(job_id)

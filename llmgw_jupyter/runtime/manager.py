"""The job runtime's facade: one object per data directory, the only one adapters talk to.

``Runtime`` keeps the contract of docs/architecture.md ("Runtime contract") and delegates: the
submission rules to ``admission.py``, when jobs run to ``scheduler.py``, one job's run to
``supervisor.py`` (through an ``executor.py`` executor, ``local.py`` by default), start-up
recovery and retention to ``recovery.py``, the data directory's lock and disk reserve to
``datadir.py``. Everything runs on one asyncio loop; short SQLite statements run inline (WAL,
synchronous=NORMAL: well under a millisecond); processes are only ever awaited. What would hold
the loop for a job's launch (its directory and output file, the provider's command, the
boundary's wrapper, fork/exec) runs in one launcher thread (``process.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from llmgw_jupyter.errors import (
    DiskFullError,
    ErrorCategory,
    GatewayError,
    InvalidInputError,
    NotFoundError,
)
from llmgw_jupyter.paths import ensure_private_dir, resolve_data_dir
from llmgw_jupyter.providers.base import Provider
from llmgw_jupyter.records import (
    JOB_KINDS,
    JobEvent,
    JobRecord,
    JobSpec,
    JobStatus,
    OutputPage,
    SessionRecord,
)
from llmgw_jupyter.runtime import output as job_output
from llmgw_jupyter.runtime import recovery
from llmgw_jupyter.runtime.admission import Admission
from llmgw_jupyter.runtime.config import RuntimeConfig, builtin_providers
from llmgw_jupyter.runtime.datadir import DISK_RESERVE_BYTES, DiskReserve, is_disk_full, take_lock
from llmgw_jupyter.runtime.detached import DetachedExecution, DetachedExecutor
from llmgw_jupyter.runtime.executor import Executor
from llmgw_jupyter.runtime.isolation import Boundary, protected_paths
from llmgw_jupyter.runtime.launch import JOB_ENV_NAMES
from llmgw_jupyter.runtime.local import LocalExecutor
from llmgw_jupyter.runtime.notifier import ChangeSubscription, JobNotifier
from llmgw_jupyter.runtime.ray_executor import RayExecution, RayExecutor
from llmgw_jupyter.runtime.scheduler import Scheduler
from llmgw_jupyter.runtime.supervisor import JobSupervisor
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.jobs import IdempotencyConflict, JobStore

__all__ = ["JOB_ENV_NAMES", "Runtime"]

EXECUTORS = ("local", "detached", "ray")

PREVIEW_CHARS = 120
_STATUS_VALUES = tuple(status.value for status in JobStatus)


class Runtime:
    """Durable jobs for coding-agent CLIs. See docs/architecture.md for the contract.

    ``executor`` says how jobs run (default: ``LocalExecutor``, children inside the isolation
    boundary); see ``runtime/executor.py`` for what another one must do."""

    def __init__(
        self, config: RuntimeConfig | None = None, *, executor: Executor | None = None
    ) -> None:
        self.config = config or RuntimeConfig()
        self.data_dir = resolve_data_dir(self.config.data_dir)
        self.providers: dict[str, Provider] = self.config.providers or builtin_providers(
            self.config
        )
        self.runtime_id = uuid.uuid4().hex
        self.notifier = JobNotifier()
        self.boundary = Boundary(
            executable=self.config.bwrap_path,
            protected=protected_paths(
                [
                    self.data_dir,
                    *self.config.protected_paths,
                    *(path for cli in self.providers.values() for path in cli.protected_paths()),
                ]
            ),
        )
        if executor is None and self.config.executor not in EXECUTORS:
            raise InvalidInputError("executor", f"must be one of {', '.join(EXECUTORS)}")
        # A detached run outlives its runtime: whatever is configured now, it is followed again.
        self._detached = DetachedExecutor(self.boundary, self.config)
        self._detached_jobs: set[str] = set()  # detached runs followed by a local runtime
        self.executor: Executor = executor or self._configured_executor()
        self._admission = Admission(self.config, self.boundary)
        self._reserve = DiskReserve(self.data_dir)
        self._scheduler: Scheduler | None = None
        self._supervisor: JobSupervisor | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._db: Database | None = None
        self._jobs: JobStore | None = None
        self._lock_handle: IO[str] | None = None
        self._closing = False

    def _configured_executor(self) -> Executor:
        if self.config.executor == "detached":
            return self._detached
        if self.config.executor == "ray":
            return RayExecutor(self.config)  # Ray itself is imported on first use
        return LocalExecutor(self.boundary)

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def store(self) -> JobStore:
        if self._jobs is None:
            raise RuntimeError("Runtime.start() has not been awaited")
        return self._jobs

    @property
    def database(self) -> Database:
        if self._db is None:
            raise RuntimeError("Runtime.start() has not been awaited")
        return self._db

    @property
    def _scheduling(self) -> Scheduler:
        if self._scheduler is None:
            raise RuntimeError("Runtime.start() has not been awaited")
        return self._scheduler

    def isolation_report(self) -> str:
        """One line for the server log: which boundary jobs run in, and for whom."""
        if self.config.isolation != "bwrap":
            return "job isolation OFF: owner's jobs run unisolated; grants' jobs are refused"
        reason = self.boundary.unavailable_reason()
        if reason is not None:
            return f"job isolation UNAVAILABLE ({reason}): every isolated job is refused"
        scope = "every job" if self.config.isolate_owner else "grants' jobs (owner's unisolated)"
        return f"job isolation: {self.boundary.describe()} for {scope}"

    async def start(self) -> None:
        """Open the store, settle what an earlier runtime left, and start scheduling."""
        ensure_private_dir(self.data_dir)
        self._lock_handle = take_lock(self.data_dir / "runtime.lock")
        self._reserve.ensure()
        self._db = Database(self.data_dir / "llmgw.sqlite3")
        self._jobs = JobStore(self._db)
        supervisor = self._supervisor = JobSupervisor(
            config=self.config,
            providers=self.providers,
            executor=self.executor,
            admission=self._admission,
            store=self._jobs,
            notifier=self.notifier,
            reserve=self._reserve,
            data_dir=self.data_dir,
            runtime_id=self.runtime_id,
        )
        scheduler = self._scheduler = Scheduler(self.config, supervisor.run)
        followers = [] if self.executor is self._detached else [self._detached]
        for found in recovery.recover(
            self._jobs, self.executor, self.notifier, self.data_dir, followers=followers
        ):
            execution = found.execution
            if isinstance(execution, DetachedExecution):
                self._detached_jobs.add(found.record.id)
            follow = (
                functools.partial(
                    recovery.resume_detached, supervisor, record=found.record, execution=execution
                )
                if isinstance(execution, (DetachedExecution, RayExecution))
                else functools.partial(supervisor.resume, record=found.record, execution=execution)
            )
            scheduler.adopt(found.record.id, found.record.provider, follow)
        self.prune()
        for record in self.store.jobs_in([JobStatus.QUEUED]):  # none after recovery; defensive
            scheduler.enqueue(record.id, record.provider)
        if self.config.retention_seconds:
            self._spawn_background(recovery.retention_loop(self.prune))

    async def close(self, *, cancel_running: bool = False) -> None:
        """Stop: queued and running jobs end as interrupted (or cancelled), output kept.

        Detached runs (``executor="detached"``, or ones a local runtime followed) go on unless
        ``cancel_running``: they stay ``running`` and the next runtime on this data dir follows
        them again."""
        if self._closing or self._jobs is None or self._scheduler is None:
            return
        self._closing = True
        self._scheduler.closing = True
        end_status = JobStatus.CANCELLED if cancel_running else JobStatus.INTERRUPTED
        for job_id in self._scheduler.drain():
            self._end_unstarted(
                job_id, end_status, message="the gateway stopped before the job started"
            )
        tasks = []
        left_running = False
        for running in self._scheduler.all_running():
            if not cancel_running and (
                self.executor is self._detached
                or isinstance(self.executor, RayExecutor)  # a Ray job outlives us too
                or running.job_id in self._detached_jobs
            ):
                left_running = True
                if running.task is not None:
                    running.task.cancel()  # the supervisor process carries on; we stop following
            else:
                running.shut_down("gateway shutdown" if cancel_running else None)
            if running.task is not None:
                tasks.append(running.task)
        if left_running:
            self._detached.detach_all()
            if isinstance(self.executor, RayExecutor):
                self.executor.detach_all()
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.kill_grace_seconds + 10)
        await self._detached.close()
        for task in self._background:
            task.cancel()
        if self._db is not None:
            self._db.close()
        if self._lock_handle is not None:
            self._lock_handle.close()
        self._jobs = None

    # -- submission -----------------------------------------------------------------------
    async def submit(self, spec: JobSpec) -> JobRecord:
        """Validate and store a job; it starts when a slot is free (or when released)."""
        if self._closing:
            raise GatewayError(ErrorCategory.SATURATED, "the gateway is shutting down")
        provider = self._provider(spec.provider)
        if spec.kind not in JOB_KINDS:
            raise InvalidInputError("kind", f"must be one of {', '.join(JOB_KINDS)}")
        args = provider.validate(spec.kind, spec.args)
        admission = self._admission
        admission.check_timeout(args)
        key = spec.idempotency_key or args.get("idempotency_key")
        if key:
            existing = self.store.find_by_idempotency_key(spec.caller, key)
            if existing is not None:
                return existing
        if not self._reserve.ok and not self._reserve.ensure():
            raise DiskFullError(
                f"the gateway's disk is full ({self.data_dir}): new jobs are refused until "
                f"{DISK_RESERVE_BYTES // 1024} KiB are free again"
            )
        admission.check_isolation(spec.caller)
        admission.check_paths(spec.caller, args)
        if spec.caller != "owner":
            admission.check_caller_share(spec.caller, self.store.count_by_status(spec.caller))
        if not spec.hold:
            provider.check_ready()
            self._scheduling.check_capacity(spec.caller)
        now = time.time()
        status = JobStatus.AWAITING_APPROVAL if spec.hold else JobStatus.QUEUED
        job_id = uuid.uuid4().hex[:12]
        values = {
            "id": job_id,
            "provider": spec.provider,
            "tool": spec.tool,
            "kind": spec.kind,
            "caller": spec.caller,
            "status": status.value,
            "args_json": json.dumps(args),
            "working_dir": args.get("working_dir"),
            "idempotency_key": key,
            "prompt_preview": _preview(str(args.get("prompt", ""))),
            "created_at": now,
            "queued_at": None if spec.hold else now,
            "updated_at": now,
            "parent_session_id": args.get("session_id") if spec.kind == "fork" else None,
            "session_id": args.get("session_id") if spec.kind == "resume" else None,
        }
        try:
            record = self.store.insert_job(
                values, (now, "job.status", status.value, {"status": status.value})
            )
        except IdempotencyConflict as conflict:
            return conflict.existing
        except sqlite3.OperationalError as error:
            if is_disk_full(error):
                raise DiskFullError(
                    f"the gateway's disk is full ({self.data_dir}): no job can be stored; "
                    "free space and retry"
                ) from None
            raise
        self.notifier.notify_record(record)
        if not spec.hold:
            self._scheduling.enqueue(record.id, record.provider)
        return record

    async def release(self, job_id: str) -> JobRecord:
        """Approval granted: an awaiting job joins the queue (or fails as saturated)."""
        record = self._require(job_id)
        if record.status is not JobStatus.AWAITING_APPROVAL:
            return record
        now = time.time()
        try:
            self._provider(record.provider).check_ready()
            self._scheduling.check_capacity(record.caller)
        except GatewayError as error:
            failed = self.store.transition(
                job_id,
                JobStatus.FAILED,
                now,
                expect=[JobStatus.AWAITING_APPROVAL],
                finished_at=now,
                error_category=error.category.value,
                error_message=error.message,
            )
            self.notifier.notify_record(failed)
            return failed or self._require(job_id)
        queued = self.store.transition(
            job_id,
            JobStatus.QUEUED,
            now,
            expect=[JobStatus.AWAITING_APPROVAL],
            queued_at=now,
            summary="approved, queued",
        )
        if queued is None:
            return self._require(job_id)
        self.notifier.notify_record(queued)
        self._scheduling.enqueue(job_id, queued.provider)
        return queued

    async def cancel(self, job_id: str, reason: str | None = None) -> JobRecord:
        """Cancel a waiting job at once, or stop a running one's process group and wait for it."""
        record = self._require(job_id)
        if record.is_terminal:
            return record
        if record.status in (JobStatus.AWAITING_APPROVAL, JobStatus.QUEUED):
            self._scheduling.dequeue(job_id)
            done = self._end_unstarted(
                job_id, JobStatus.CANCELLED, cancel_reason=reason or "cancelled"
            )
            if done is not None:
                return done
        running = self._scheduling.running(job_id)
        if running is not None:
            running.cancel(reason or "cancelled")
            return await self.wait_finished(job_id, self.config.kill_grace_seconds + 10)
        return self._require(job_id)

    def find_by_idempotency_key(self, caller: str, key: str) -> JobRecord | None:
        return self.store.find_by_idempotency_key(caller, key)

    # -- reading --------------------------------------------------------------------------
    @cached_property
    def jobs_stamp(self) -> Callable[[], tuple[int, int]]:
        """A stamp that moves whenever a job or event may have changed (``changes_of``): what
        caches of job reads check (the gateway's status answers)."""
        return self.database.changes_of("jobs", "job_events")

    def get(self, job_id: str) -> JobRecord | None:
        return self.store.get_job(job_id)

    def list_jobs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        provider: str | None = None,
        caller: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[JobRecord], int]:
        statuses = [status] if isinstance(status, str) else list(status or [])
        for value in statuses:
            if value not in _STATUS_VALUES:
                raise InvalidInputError("status", f"must be one of {', '.join(_STATUS_VALUES)}")
        return self.store.list_jobs(
            statuses=statuses,
            provider=provider,
            caller=caller,
            limit=max(1, min(limit, 500)),
            offset=max(0, offset),
        )

    def events(self, job_id: str, after_seq: int = 0, limit: int = 200) -> list[JobEvent]:
        return self.store.events_after(job_id, after_seq, max(1, min(limit, 1000)))

    def read_output(
        self, job_id: str, stream: str = "stdout", offset: int = 0, limit: int = 65536
    ) -> OutputPage:
        record = self._require(job_id)
        if stream not in job_output.STREAM_FILES:
            raise InvalidInputError("stream", "must be stdout or stderr")
        if offset < 0:
            raise InvalidInputError("offset", "must be >= 0")
        return job_output.read_page(
            self.job_dir(job_id), stream, offset, limit, complete=record.is_terminal
        )

    def job_dir(self, job_id: str) -> Path:
        return job_output.job_dir(self.data_dir, job_id)

    def sessions(
        self, caller: str | None = None, *, limit: int = 200, offset: int = 0
    ) -> list[SessionRecord]:
        """Sessions newest first, paged in SQL."""
        return self.store.list_sessions(caller, limit=limit, offset=offset)

    def session(self, session_id: str) -> SessionRecord | None:
        return self.store.get_session(session_id)

    def latest_session(
        self, *, caller: str | None, provider: str = "codex", working_dir: str | None = None
    ) -> SessionRecord | None:
        return self.store.latest_session(caller=caller, provider=provider, working_dir=working_dir)

    def summary(self, caller: str | None = None) -> dict[str, int]:
        counts = dict.fromkeys(_STATUS_VALUES, 0)
        counts.update(self.store.count_by_status(caller))
        return counts

    def usage_totals(self, since: float | None = None) -> dict[str, list[dict[str, Any]]]:
        """Tokens, cost and job counts summed per caller and per provider (``by_caller``,
        ``by_provider``; each entry names its group in ``name``), over every job kept or those
        created since ``since``. One query; the two views are folded from its groups."""
        figures: tuple[str, ...] = ("jobs", "input_tokens", "cached_input_tokens")
        figures += ("output_tokens", "reasoning_output_tokens", "priced_jobs")
        folded: dict[str, dict[str, dict[str, Any]]] = {"caller": {}, "provider": {}}
        for group in self.store.usage_totals(since):
            for key, totals in folded.items():
                name = str(group[key])
                total = totals.setdefault(
                    name, {"name": name, **dict.fromkeys(figures, 0), "cost_usd": None}
                )
                for figure in figures:
                    total[figure] += int(group[figure] or 0)
                if group["cost_usd"] is not None:
                    total["cost_usd"] = (total["cost_usd"] or 0.0) + float(group["cost_usd"])
        return {f"by_{key}": [totals[n] for n in sorted(totals)] for key, totals in folded.items()}

    def subscribe(self, maxsize: int = 1000) -> ChangeSubscription:
        """A feed of job changes; see ``JobChange`` for the resync a slow reader gets."""
        return self.notifier.subscribe(maxsize)

    async def wait_for_events(
        self, job_id: str, after_seq: int, timeout: float, limit: int = 200
    ) -> tuple[list[JobEvent], JobRecord]:
        """New events after ``after_seq``, or the job's end, or nothing by the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            with self.notifier.waiter(job_id) as woken:
                events = self.events(job_id, after_seq, limit)
                record = self._require(job_id)
                remaining = deadline - loop.time()
                if events or record.is_terminal or remaining <= 0:
                    return events, record
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(woken, remaining)

    async def wait_finished(self, job_id: str, timeout: float | None) -> JobRecord:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self.notifier.waiter(job_id) as woken:
                record = self._require(job_id)
                if record.is_terminal:
                    return record
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return record
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(woken, remaining)

    def prune(self, now: float | None = None) -> int:
        """Delete finished jobs older than the retention age, with their output files."""
        return recovery.prune(self.store, self.data_dir, self.config.retention_seconds, now)

    # -- helpers --------------------------------------------------------------------------
    def _end_unstarted(
        self,
        job_id: str,
        status: JobStatus,
        *,
        message: str | None = None,
        category: ErrorCategory | None = None,
        cancel_reason: str | None = None,
    ) -> JobRecord | None:
        done = self.store.end_unstarted(
            job_id,
            status,
            time.time(),
            message=message,
            category=category,
            cancel_reason=cancel_reason,
        )
        self.notifier.notify_record(done)
        return done

    def _spawn_background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _provider(self, name: str) -> Provider:
        provider = self.providers.get(name)
        if provider is None:
            raise InvalidInputError(
                "provider", f"must be one of {', '.join(sorted(self.providers))}"
            )
        return provider

    def _require(self, job_id: str) -> JobRecord:
        record = self.store.get_job(job_id)
        if record is None:
            raise NotFoundError(f"job {job_id}")
        return record


def _preview(prompt: str) -> str:
    text = " ".join(prompt.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"

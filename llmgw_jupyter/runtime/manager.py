"""The job runtime: one object per data directory owning store, queue, processes and wake-ups.

Everything runs on one asyncio loop. Short SQLite statements run inline (WAL, synchronous=NORMAL:
well under a millisecond); processes are only ever awaited, never waited on synchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import re
import signal
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from llmgw_jupyter.errors import (
    DiskFullError,
    ErrorCategory,
    GatewayError,
    InvalidInputError,
    NotFoundError,
    SaturatedError,
)
from llmgw_jupyter.paths import ensure_private_dir, resolve_data_dir
from llmgw_jupyter.providers.base import Command, LaunchContext, ParsedEvent, Provider, StreamParser
from llmgw_jupyter.records import (
    ACTIVE_STATUSES,
    JOB_KINDS,
    JobEvent,
    JobRecord,
    JobSpec,
    JobStatus,
    OutputPage,
    SessionRecord,
)
from llmgw_jupyter.runtime import output as job_output
from llmgw_jupyter.runtime.config import RuntimeConfig, builtin_providers
from llmgw_jupyter.runtime.isolation import (
    INSIDE_HOME,
    Boundary,
    IsolationError,
    protected_paths,
)
from llmgw_jupyter.runtime.notifier import ChangeSubscription, JobChange, JobNotifier
from llmgw_jupyter.runtime.process import (
    CliProcess,
    is_same_process,
    process_start_time,
    signal_group,
    spawn,
    terminate_group,
)
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.jobs import IdempotencyConflict, JobStore

READ_CHUNK = 64 * 1024
MAX_LINE_BYTES = 1024 * 1024
STDERR_TAIL_BYTES = 4096
PIPE_DRAIN_SECONDS = 5.0
PREVIEW_CHARS = 120
# Space kept free in the data dir: on a full disk it is released so the gateway can still record
# how each job ended; while it cannot be re-made, new submissions are refused as disk_full.
DISK_RESERVE_BYTES = 512 * 1024
# The job environment is an allow list: these, LC_*, what the provider names (its credentials)
# and ``env_passthrough``. Nothing else of the server's environment reaches a job.
JOB_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "USER",
        "LOGNAME",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "NO_PROXY",
        "no_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    }
)


@dataclass
class _RunningJob:
    job_id: str
    provider: str
    process: CliProcess | None = None
    # cancel | wall_timeout | idle_timeout | overflow | shutdown | disk_full | write_error
    stop_reason: str | None = None
    error_detail: str | None = None
    cancel_reason: str | None = None
    last_output: float = field(default_factory=time.monotonic)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    events_stored: int = 0
    session_recorded: bool = False
    task: asyncio.Task[None] | None = None


class Runtime:
    """Durable jobs for coding-agent CLIs. See docs/architecture.md for the contract."""

    def __init__(self, config: RuntimeConfig | None = None) -> None:
        self.config = config or RuntimeConfig()
        self.data_dir = resolve_data_dir(self.config.data_dir)
        self.providers: dict[str, Provider] = self.config.providers or builtin_providers(
            self.config
        )
        self.runtime_id = uuid.uuid4().hex
        self.notifier = JobNotifier()
        self._queue: deque[tuple[str, str]] = deque()  # (job_id, provider)
        self._running: dict[str, _RunningJob] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._db: Database | None = None
        self._jobs: JobStore | None = None
        self._lock_handle: IO[str] | None = None
        self._closing = False
        self._reserve_ok = True
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

    def isolation_report(self) -> str:
        """One line for the server log: which boundary jobs run in, and for whom."""
        if self.config.isolation != "bwrap":
            return "job isolation OFF: owner's jobs run unisolated; grants' jobs are refused"
        reason = self.boundary.unavailable_reason()
        if reason is not None:
            return f"job isolation UNAVAILABLE ({reason}): every isolated job is refused"
        scope = "every job" if self.config.isolate_owner else "grants' jobs (owner's unisolated)"
        return f"job isolation: {self.boundary.describe()} for {scope}"

    def _isolated(self, caller: str) -> bool:
        return caller != "owner" or (self.config.isolation == "bwrap" and self.config.isolate_owner)

    def _check_isolation(self, caller: str) -> None:
        if not self._isolated(caller):
            return
        if self.config.isolation != "bwrap":
            raise IsolationError(
                "grants' jobs only run inside the isolation boundary, which is switched off "
                "(c.LLMGatewayApp.isolation = 'off'); the owner must turn it on"
            )
        reason = self.boundary.unavailable_reason()
        if reason is not None:
            hint = (
                ""
                if caller != "owner"
                else (
                    "; the owner can run their own jobs without it "
                    "(c.LLMGatewayApp.isolate_owner_jobs = False)"
                )
            )
            raise IsolationError(f"job isolation is unavailable: {reason}{hint}")

    async def start(self) -> None:
        ensure_private_dir(self.data_dir)
        self._lock_handle = _take_lock(self.data_dir / "runtime.lock")
        self._reserve_ok = self._ensure_reserve()
        self._db = Database(self.data_dir / "llmgw.sqlite3")
        self._jobs = JobStore(self._db)
        self._recover()
        self.prune()
        for record in self.store.jobs_in([JobStatus.QUEUED]):  # none after recovery; defensive
            self._queue.append((record.id, record.provider))
        if self.config.retention_seconds:
            self._spawn_background(self._retention_loop())

    async def close(self, *, cancel_running: bool = False) -> None:
        """Stop: queued and running jobs end as interrupted (or cancelled), output kept."""
        if self._closing or self._jobs is None:
            return
        self._closing = True
        end_status = JobStatus.CANCELLED if cancel_running else JobStatus.INTERRUPTED
        while self._queue:
            job_id, _ = self._queue.popleft()
            self._finish_unstarted(job_id, end_status, "the gateway stopped before the job started")
        tasks = []
        for running in list(self._running.values()):
            running.stop_reason = "shutdown"
            running.cancel_reason = "gateway shutdown" if cancel_running else None
            running.wake.set()
            if running.task is not None:
                tasks.append(running.task)
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.kill_grace_seconds + 10)
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
        self._check_timeout(args)
        key = spec.idempotency_key or args.get("idempotency_key")
        if key:
            existing = self.find_by_idempotency_key(spec.caller, key)
            if existing is not None:
                return existing
        if not self._reserve_ok and not self._ensure_reserve():
            raise DiskFullError(
                f"the gateway's disk is full ({self.data_dir}): new jobs are refused until "
                f"{DISK_RESERVE_BYTES // 1024} KiB are free again"
            )
        self._check_isolation(spec.caller)
        self._check_grant_roots(spec.caller, args)
        if self._isolated(spec.caller):
            for field_name, paths in (
                ("working_dir", [args.get("working_dir") or os.getcwd()]),
                ("add_dirs", args.get("add_dirs", [])),
            ):
                for path in paths:
                    self.boundary.check_path(field_name, path)
        self._check_caller_share(spec.caller)
        if not spec.hold:
            provider.check_ready()
            self._check_capacity(spec.caller)
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
            if _is_disk_full(error):
                raise DiskFullError(
                    f"the gateway's disk is full ({self.data_dir}): no job can be stored; "
                    "free space and retry"
                ) from None
            raise
        self._notify(record)
        if not spec.hold:
            self._queue.append((record.id, record.provider))
            self._schedule()
        return record

    async def release(self, job_id: str) -> JobRecord:
        """Approval granted: an awaiting job joins the queue (or fails as saturated)."""
        record = self._require(job_id)
        if record.status is not JobStatus.AWAITING_APPROVAL:
            return record
        now = time.time()
        try:
            self._provider(record.provider).check_ready()
            self._check_capacity(record.caller)
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
            self._notify(failed)
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
        self._notify(queued)
        self._queue.append((job_id, queued.provider))
        self._schedule()
        return queued

    async def cancel(self, job_id: str, reason: str | None = None) -> JobRecord:
        """Cancel a waiting job at once, or stop a running one's process group and wait for it."""
        record = self._require(job_id)
        if record.is_terminal:
            return record
        if record.status in (JobStatus.AWAITING_APPROVAL, JobStatus.QUEUED):
            self._queue = deque(item for item in self._queue if item[0] != job_id)
            done = self._finish_unstarted(job_id, JobStatus.CANCELLED, None, reason or "cancelled")
            if done is not None:
                return done
        running = self._running.get(job_id)
        if running is not None:
            if running.stop_reason is None:
                running.stop_reason = "cancel"
                running.cancel_reason = reason or "cancelled"
            running.wake.set()
            return await self.wait_finished(job_id, self.config.kill_grace_seconds + 10)
        return self._require(job_id)

    # -- reading --------------------------------------------------------------------------
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
            if value not in {s.value for s in JobStatus}:
                raise InvalidInputError(
                    "status", f"must be one of {', '.join(s.value for s in JobStatus)}"
                )
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

    def sessions(self, caller: str | None = None) -> list[SessionRecord]:
        return self.store.list_sessions(caller)

    def session(self, session_id: str) -> SessionRecord | None:
        return self.store.get_session(session_id)

    def latest_session(
        self, *, caller: str | None, provider: str = "codex", working_dir: str | None = None
    ) -> SessionRecord | None:
        return self.store.latest_session(caller=caller, provider=provider, working_dir=working_dir)

    def summary(self, caller: str | None = None) -> dict[str, int]:
        counts = {status.value: 0 for status in JobStatus}
        counts.update(self.store.count_by_status(caller))
        return counts

    def subscribe(self, maxsize: int = 1000) -> ChangeSubscription:
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
        if not self.config.retention_seconds:
            return 0
        cutoff = (now or time.time()) - self.config.retention_seconds
        job_ids = self.store.finished_before(cutoff)
        if job_ids:
            self.store.delete_jobs(job_ids)
            for job_id in job_ids:
                job_output.remove_job_dir(self.job_dir(job_id))
        return len(job_ids)

    # -- scheduling -----------------------------------------------------------------------
    def _check_capacity(self, caller: str = "owner") -> None:
        limit = self.config.max_queued
        if caller != "owner":  # the owner always keeps room in the queue
            limit = max(0, limit - self.config.owner_reserved_queue)
        if len(self._queue) >= limit:
            raise SaturatedError(
                f"the job queue is full ({len(self._queue)} waiting, {len(self._running)} "
                f"running; limit {limit} for this caller, c.LLMGatewayApp.max_queued); "
                "retry later or cancel jobs"
            )

    def _check_grant_roots(self, caller: str, args: dict[str, Any]) -> None:
        """A grant works only under the owner's chosen directories (resolved, symlinks followed)."""
        if caller == "owner" or self.config.grant_roots is None:
            return
        roots = [os.path.realpath(os.path.expanduser(root)) for root in self.config.grant_roots]
        if not args.get("working_dir") and roots and os.path.isdir(roots[0]):
            args["working_dir"] = roots[0]  # a grant works in the first root by default
        for field_name, paths in (
            ("working_dir", [args.get("working_dir") or os.getcwd()]),
            ("add_dirs", args.get("add_dirs", [])),
        ):
            for path in paths:
                real = os.path.realpath(path)
                if not any(
                    real == root or real.startswith(root.rstrip("/") + "/") for root in roots
                ):
                    raise InvalidInputError(
                        field_name,
                        f"{path} is outside the directories grants may work in "
                        f"({', '.join(roots) or 'none'}); the owner sets them with "
                        "c.LLMGatewayApp.grant_roots",
                    )

    def _check_caller_share(self, caller: str) -> None:
        """A grant holds at most ``max_active_per_grant`` unfinished jobs at once."""
        if caller == "owner":
            return
        limit = self.config.max_active_per_grant
        active = sum(
            count
            for status, count in self.store.count_by_status(caller).items()
            if status in {s.value for s in ACTIVE_STATUSES}
        )
        if active >= limit:
            raise GatewayError(
                ErrorCategory.LIMIT_EXCEEDED,
                f"this caller already has {active} unfinished jobs (limit {limit} per grant, "
                "c.LLMGatewayApp.max_active_jobs_per_grant); wait for one to finish or cancel one",
            )

    def _check_timeout(self, args: dict[str, Any]) -> None:
        wall = self.config.wall_timeout_seconds
        asked = args.get("timeout_seconds")
        if asked is not None and float(asked) > wall:
            raise InvalidInputError(
                "timeout_seconds",
                f"must be at most {wall:g} (the server's wall_timeout_seconds; the owner can "
                "raise c.LLMGatewayApp.wall_timeout_seconds)",
            )

    def _provider_limit(self, provider: str) -> int:
        return self.config.provider_limits.get(provider, self.config.max_running)

    def _schedule(self) -> None:
        while not self._closing and self._queue and len(self._running) < self.config.max_running:
            busy: dict[str, int] = {}
            for running in self._running.values():
                busy[running.provider] = busy.get(running.provider, 0) + 1
            for index, (job_id, provider) in enumerate(self._queue):
                if busy.get(provider, 0) < self._provider_limit(provider):
                    del self._queue[index]
                    self._launch(job_id, provider)
                    break
            else:
                return

    def _launch(self, job_id: str, provider: str) -> None:
        running = _RunningJob(job_id=job_id, provider=provider)
        self._running[job_id] = running
        running.task = asyncio.get_running_loop().create_task(self._run(running))
        running.task.add_done_callback(lambda _task: self._on_run_done(job_id))

    def _on_run_done(self, job_id: str) -> None:
        self._running.pop(job_id, None)
        self._schedule()

    # -- running one job --------------------------------------------------------------------
    async def _run(self, running: _RunningJob) -> None:
        job_id = running.job_id
        record = self.store.get_job(job_id)
        if record is None or record.status is not JobStatus.QUEUED:
            return
        provider = self.providers[record.provider]
        directory = self.job_dir(job_id)
        isolated = self._isolated(record.caller)
        try:
            ensure_private_dir(directory)
            self._check_isolation(record.caller)
            _check_paths_unchanged(record.args)
            context = LaunchContext(
                caller=record.caller,
                isolated=isolated,
                state_dir=ensure_private_dir(self.data_dir / "callers" / _slug(record.caller)),
            )
            command = provider.build_command(record.kind, record.args, directory, context)
            argv = command.argv
            if isolated:
                argv = self.boundary.wrap(
                    command.argv, cwd=command.cwd or os.getcwd(), mounts=command.mounts
                )
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
            env = self._job_env(command, isolated)
            process = await spawn(argv, cwd=command.cwd, env=env, stdin=command.stdin is not None)
        except OSError as error:
            self._fail_unstarted(
                job_id, ErrorCategory.SPAWN_ERROR, f"could not start {command.argv[0]}: {error}"
            )
            return
        running.process = process
        now = time.time()
        started = self.store.transition(
            job_id,
            JobStatus.RUNNING,
            now,
            expect=[JobStatus.QUEUED],
            started_at=now,
            pid=process.pid,
            pid_start_time=process_start_time(process.pid),
            argv_json=json.dumps(argv),
            runtime_id=self.runtime_id,
        )
        if started is None:  # cancelled while spawning
            await terminate_group(process, self.config.kill_grace_seconds)
            await process.wait_exit()
            return
        self._notify(started)
        await self._supervise(running, started, provider, process, command.stdin)

    def _job_env(self, command: Command, isolated: bool) -> dict[str, str]:
        """An allow list: no Jupyter, JupyterHub or gateway token reaches a job."""
        names = {*JOB_ENV_NAMES, *command.env_names, *self.config.env_passthrough}
        env = {
            name: value
            for name, value in os.environ.items()
            if name in names or name.startswith("LC_")
        }
        env.setdefault("PATH", os.defpath)
        if isolated:
            env["HOME"] = INSIDE_HOME
            env["TMPDIR"] = "/tmp"
        env.update(self.config.env)
        env.update(command.env)
        return {name: value for name, value in env.items() if value != ""}

    async def _supervise(
        self,
        running: _RunningJob,
        record: JobRecord,
        provider: Provider,
        process: CliProcess,
        stdin_data: bytes | None,
    ) -> None:
        output = job_output.CappedOutput(self.job_dir(record.id), self.config.output_cap_bytes)
        parser = provider.new_parser()
        stderr_tail = bytearray()
        assert process.stdout is not None and process.stderr is not None
        pumps = [
            asyncio.ensure_future(self._feed_stdin(process, stdin_data)),
            asyncio.ensure_future(
                self._pump(running, record, process.stdout, "stdout", output, parser, None)
            ),
            asyncio.ensure_future(
                self._pump(running, record, process.stderr, "stderr", output, parser, stderr_tail)
            ),
        ]
        exit_code = await self._watch(running, record, process)
        signal_group(process.pid, signal.SIGKILL)  # leftovers of the group must not outlive it
        _, pending = await asyncio.wait(pumps, timeout=PIPE_DRAIN_SECONDS)
        for task in pending:
            task.cancel()
        output.close()
        self._settle(running, record, parser, exit_code, output, bytes(stderr_tail))

    async def _watch(
        self, running: _RunningJob, record: JobRecord, process: CliProcess
    ) -> int | None:
        """Wait for the exit while enforcing cancel, wall-clock and idle limits."""
        wall = float(record.args.get("timeout_seconds") or self.config.wall_timeout_seconds)
        idle = self.config.idle_timeout_seconds
        started = time.monotonic()
        exited = asyncio.ensure_future(process.wait_exit())
        stopping: asyncio.Future[None] | None = None
        while not exited.done():
            if running.stop_reason is None:
                now = time.monotonic()
                if now - started >= wall:
                    running.stop_reason = "wall_timeout"
                elif now - running.last_output >= idle:
                    running.stop_reason = "idle_timeout"
            if running.stop_reason is not None and stopping is None:
                stopping = asyncio.ensure_future(
                    terminate_group(process, self.config.kill_grace_seconds)
                )
            running.wake.clear()
            woken = asyncio.ensure_future(running.wake.wait())
            deadline = min(started + wall, running.last_output + idle) - time.monotonic()
            timeout = None if stopping is not None else max(deadline, 0.0) + 0.01
            await asyncio.wait({exited, woken}, timeout=timeout, return_when="FIRST_COMPLETED")
            woken.cancel()
        if stopping is not None:
            stopping.cancel()
        return exited.result()

    @staticmethod
    async def _feed_stdin(process: asyncio.subprocess.Process, data: bytes | None) -> None:
        """Write the prompt and close stdin: an open stdin makes ``codex exec`` wait forever."""
        if process.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if data:
                process.stdin.write(data)
                await process.stdin.drain()
            process.stdin.close()
            await process.stdin.wait_closed()

    async def _pump(
        self,
        running: _RunningJob,
        record: JobRecord,
        reader: asyncio.StreamReader,
        stream: str,
        output: job_output.CappedOutput,
        parser: StreamParser,
        tail: bytearray | None,
    ) -> None:
        pending = bytearray()
        discarding = False  # inside an over-long line: not parsed, still kept on disk
        while True:
            chunk = await reader.read(READ_CHUNK)
            if not chunk:
                break
            running.last_output = time.monotonic()
            try:
                kept = output.write(stream, chunk)
            except OSError as error:
                if running.stop_reason is None:
                    running.stop_reason = "disk_full" if _is_disk_full(error) else "write_error"
                    running.error_detail = str(error)
                    running.wake.set()
                continue  # keep draining the pipe so the CLI is not blocked on a full pipe
            if output.overflowed and running.stop_reason is None:
                running.stop_reason = "overflow"
                running.wake.set()
            if tail is not None:
                tail += kept
                del tail[:-STDERR_TAIL_BYTES]
                continue
            pending += kept
            lines: list[bytes] = []
            while (end := pending.find(b"\n")) >= 0:
                if not discarding:
                    lines.append(bytes(pending[:end]))
                discarding = False
                del pending[: end + 1]
            if len(pending) > MAX_LINE_BYTES:
                pending.clear()
                discarding = True
            if lines and running.stop_reason not in ("disk_full", "write_error"):
                self._parse_safely(running, record, parser, lines)
        if tail is None and pending and not discarding:
            self._parse_safely(running, record, parser, [bytes(pending)])

    def _parse_safely(
        self, running: _RunningJob, record: JobRecord, parser: StreamParser, lines: list[bytes]
    ) -> None:
        """A store that cannot take events (full disk) stops the job; the pump keeps draining
        the pipe so the CLI is never left blocked on a full pipe."""
        try:
            self._parse_lines(running, record, parser, lines)
        except (sqlite3.OperationalError, OSError) as error:
            if running.stop_reason is None:
                running.stop_reason = "disk_full" if _is_disk_full(error) else "write_error"
                running.error_detail = str(error)
                running.wake.set()

    def _parse_lines(
        self, running: _RunningJob, record: JobRecord, parser: StreamParser, lines: list[bytes]
    ) -> None:
        parsed: list[ParsedEvent] = []
        for line in lines:
            parsed.extend(parser.feed(line))
        if not parsed:
            return
        now = time.time()
        room = self.config.max_events_per_job - running.events_stored
        rows = [(now, e.type, e.summary, e.data) for e in parsed[: max(room, 0)]]
        running.events_stored += len(rows)
        if parser.session_id and not running.session_recorded:
            running.session_recorded = True
            self._record_session(record, parser.session_id, now)
        if rows:
            last_seq = self.store.append_events(record.id, rows)
            self.notifier.notify(JobChange(record.id, JobStatus.RUNNING.value, last_seq))

    def _record_session(self, record: JobRecord, session_id: str, now: float) -> None:
        parent = record.args.get("session_id") if record.kind == "fork" else None
        self.store.update_job(record.id, session_id=session_id)
        self.store.record_session(
            session_id=session_id,
            provider=record.provider,
            caller=record.caller,
            parent_session_id=parent,
            working_dir=record.working_dir,
            job_id=record.id,
            ts=now,
        )

    def _settle(
        self,
        running: _RunningJob,
        record: JobRecord,
        parser: StreamParser,
        exit_code: int | None,
        output: job_output.CappedOutput,
        stderr_tail: bytes,
    ) -> None:
        usage = parser.usage
        fields: dict[str, Any] = {
            "finished_at": time.time(),
            "exit_code": exit_code,
            "final_message": parser.final_message,
            "stdout_bytes": output.sizes["stdout"],
            "stderr_bytes": output.sizes["stderr"],
        }
        if usage is not None:
            fields.update(usage.to_dict())
        if parser.session_id:
            fields["session_id"] = parser.session_id
        reason = running.stop_reason
        wall = record.args.get("timeout_seconds") or self.config.wall_timeout_seconds
        if reason == "cancel":
            status, fields["cancel_reason"] = JobStatus.CANCELLED, running.cancel_reason
        elif reason == "shutdown":
            status = JobStatus.CANCELLED if running.cancel_reason else JobStatus.INTERRUPTED
            fields["cancel_reason"] = running.cancel_reason
            fields["error_message"] = "the gateway stopped while the job was running"
        elif reason in ("wall_timeout", "idle_timeout"):
            status = JobStatus.TIMED_OUT
            fields["error_category"] = ErrorCategory.TIMEOUT.value
            fields["error_message"] = (
                f"ran longer than {wall:g} s (wall-clock timeout)"
                if reason == "wall_timeout"
                else f"no output for {self.config.idle_timeout_seconds:g} s (idle timeout)"
            )
        elif reason in ("disk_full", "write_error"):
            if reason == "disk_full":
                self._release_reserve()  # room to record this ending
            status = JobStatus.FAILED
            fields["error_category"] = (
                ErrorCategory.DISK_FULL if reason == "disk_full" else ErrorCategory.CLI_ERROR
            ).value
            fields["error_message"] = (
                f"could not store the job's output ({running.error_detail}); the job was stopped "
                "and what was captured before is kept"
            )
        elif reason == "overflow":
            status = JobStatus.FAILED
            fields["error_category"] = ErrorCategory.OUTPUT_OVERFLOW.value
            fields["error_message"] = (
                f"output exceeded the cap of {self.config.output_cap_bytes} bytes; "
                "the captured part is kept"
            )
        else:
            verdict = parser.verdict(exit_code, stderr_tail.decode("utf-8", "replace"))
            status = JobStatus.SUCCEEDED if verdict.succeeded else JobStatus.FAILED
            if not verdict.succeeded:
                fields["error_category"] = (verdict.category or ErrorCategory.CLI_ERROR).value
                fields["error_message"] = verdict.message
        try:
            done = self.store.transition(
                record.id,
                status,
                fields["finished_at"],
                expect=[JobStatus.RUNNING],
                summary=_status_summary(status, fields),
                **fields,
            )
        except sqlite3.OperationalError as error:
            if not _is_disk_full(error):
                raise
            self._release_reserve()
            done = self._settle_without_space(record.id, str(error), fields)
        self._notify(done)

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

    def _ensure_reserve(self) -> bool:
        path = self.data_dir / "disk-reserve"
        try:
            if path.stat().st_size == DISK_RESERVE_BYTES:
                self._reserve_ok = True
                return True
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, bytes(DISK_RESERVE_BYTES))
            finally:
                os.close(fd)
        except OSError:
            path.unlink(missing_ok=True)
            self._reserve_ok = False
            return False
        self._reserve_ok = True
        return True

    def _release_reserve(self) -> None:
        self._reserve_ok = False
        (self.data_dir / "disk-reserve").unlink(missing_ok=True)

    # -- helpers --------------------------------------------------------------------------
    def _finish_unstarted(
        self, job_id: str, status: JobStatus, message: str | None, cancel_reason: str | None = None
    ) -> JobRecord | None:
        now = time.time()
        done = self.store.transition(
            job_id,
            status,
            now,
            expect=[JobStatus.QUEUED, JobStatus.AWAITING_APPROVAL],
            finished_at=now,
            error_message=message,
            cancel_reason=cancel_reason,
            summary=cancel_reason or status.value,
        )
        self._notify(done)
        return done

    def _fail_unstarted(self, job_id: str, category: ErrorCategory, message: str) -> None:
        now = time.time()
        done = self.store.transition(
            job_id,
            JobStatus.FAILED,
            now,
            expect=[JobStatus.QUEUED],
            finished_at=now,
            error_category=category.value,
            error_message=message,
            summary=message,
        )
        self._notify(done)

    def _recover(self) -> None:
        """Jobs left queued or running by a runtime that is gone become interrupted, never re-run.

        A worker that outlived its runtime has lost its output pipe; it is stopped (its start time
        proves it is the same process) so it does not keep spending tokens unobserved.
        """
        now = time.time()
        for record in self.store.jobs_in([JobStatus.QUEUED, JobStatus.RUNNING]):
            message = "the gateway stopped before the job started; it was not re-run"
            if record.status is JobStatus.RUNNING:
                message = "the gateway stopped while the job was running; output so far is kept"
                if is_same_process(record.pid, record.pid_start_time) and record.pid:
                    signal_group(record.pid, signal.SIGKILL)
                    message += f" (its process {record.pid} was still alive and was stopped)"
            directory = self.job_dir(record.id)
            done = self.store.transition(
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
            self._notify(done)

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(3600)
            self.prune()

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

    def find_by_idempotency_key(self, caller: str, key: str) -> JobRecord | None:
        row = self.database.query_one(
            "SELECT id FROM jobs WHERE caller = ? AND idempotency_key = ?", (caller, key)
        )
        return self.store.get_job(row["id"]) if row else None

    def _notify(self, record: JobRecord | None) -> None:
        if record is not None:
            self.notifier.notify(JobChange(record.id, record.status.value, record.last_seq))


def _take_lock(path: Path) -> IO[str]:
    """One runtime per data directory: two would both 'recover' each other's live jobs."""
    handle = open(path, "a+")  # noqa: SIM115 - held for the runtime's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise GatewayError(
            ErrorCategory.CONFLICT,
            f"{path.parent} is in use by another llmgw runtime (pid {holder})",
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _slug(caller: str) -> str:
    """A caller key as one safe path component (``grant:bot`` -> ``grant-bot``)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "-", caller)[:100].strip(".") or "caller"
    return slug


def _check_paths_unchanged(args: dict[str, Any]) -> None:
    """Paths were resolved (and policy-checked) at submission; a directory swapped for a symlink
    while the job waited must not move the job elsewhere."""
    for field_name, paths in (
        ("working_dir", [args["working_dir"]] if args.get("working_dir") else []),
        ("add_dirs", args.get("add_dirs", [])),
    ):
        for path in paths:
            if os.path.realpath(path) != path or not os.path.isdir(path):
                raise InvalidInputError(
                    field_name,
                    f"{path} changed since the job was submitted (it no longer resolves to the "
                    "same directory); the job was not started",
                )


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    return isinstance(error, sqlite3.OperationalError) and "full" in str(error).lower()


def _preview(prompt: str) -> str:
    text = " ".join(prompt.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _status_summary(status: JobStatus, fields: dict[str, Any]) -> str:
    message = fields.get("error_message") or fields.get("cancel_reason")
    return f"{status.value}: {message}" if message else status.value

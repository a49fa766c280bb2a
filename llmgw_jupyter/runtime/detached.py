"""The detached executor: jobs that outlive the Jupyter server.

Each job's CLI runs under its own small supervisor process (``job_supervisor.py``, in a session
of its own and no child of the server), which writes the output straight to the job's files and
records the exit in ``exit.json``. The runtime tails those files (inotify on the job's directory;
a short bounded wait where there is none), so a runtime that stops, or is killed, loses nothing:
the next one on the same data dir follows the run again (``reattach``), or settles it from the
files when it ended meanwhile. Stopping the runtime leaves the runs going (``detach_all``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import functools
import json
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

from llmgw_jupyter.runtime import job_supervisor
from llmgw_jupyter.runtime.config import RuntimeConfig
from llmgw_jupyter.runtime.executor import STREAMS, ByteStream, ExecutionRef, LaunchRequest
from llmgw_jupyter.runtime.isolation import Boundary
from llmgw_jupyter.runtime.output import STREAM_FILES
from llmgw_jupyter.runtime.process import is_same_process, kill_group_of, process_start_time

SUPERVISOR_SCRIPT = job_supervisor.__file__
SAFETY_WAIT_SECONDS = 1.0  # with inotify: only against a missed event
POLL_SECONDS = 0.05  # without inotify (not Linux): a short bounded wait, never a busy loop
OVERFLOW_MARK = b"\0"  # past the cap: counted as overflow by the runtime, never stored

_IN_MODIFY, _IN_CLOSE_WRITE, _IN_MOVED_TO, _IN_CREATE = 0x2, 0x8, 0x80, 0x100
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class _Inotify:
    """One inotify descriptor for all of an executor's job directories: closing an inotify
    descriptor waits for the kernel (milliseconds), removing one watch does not."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._callbacks: dict[int, set[Callable[[], None]]] = {}
        self.fd = _inotify_fd()
        if self.fd is not None:
            self._loop.add_reader(self.fd, self._on_events)

    def add(self, directory: Path, callback: Callable[[], None]) -> int | None:
        libc = _libc()
        if self.fd is None or libc is None:
            return None
        mask = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
        wd = int(libc.inotify_add_watch(self.fd, bytes(directory), mask))
        if wd < 0:
            return None
        self._callbacks.setdefault(wd, set()).add(callback)
        return wd

    def remove(self, wd: int, callback: Callable[[], None]) -> None:
        callbacks = self._callbacks.get(wd, set())
        callbacks.discard(callback)
        libc = _libc()
        if not callbacks and self.fd is not None and libc is not None:
            del self._callbacks[wd]
            libc.inotify_rm_watch(self.fd, wd)

    def _on_events(self) -> None:
        assert self.fd is not None
        woken: set[int] = set()
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while data := os.read(self.fd, 65536):
                offset = 0
                while offset + _EVENT.size <= len(data):
                    wd, _, _, length = _EVENT.unpack_from(data, offset)
                    woken.add(wd)
                    offset += _EVENT.size + length
        for wd in woken:
            for callback in list(self._callbacks.get(wd, ())):
                callback()

    def close(self) -> None:
        if self.fd is not None:
            self._loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = None
        self._callbacks.clear()


class _DirectoryWatch:
    """Wakes waiters whenever a file in one directory changes, or the supervisor exits."""

    def __init__(self, inotify: _Inotify, directory: Path, supervisor_pid: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._waiters: set[asyncio.Future[None]] = set()
        self._inotify = inotify
        self._wd = inotify.add(directory, self.wake)
        self.precise = self._wd is not None
        self.supervisor_exited = False
        self._pidfd: int | None = None
        with contextlib.suppress(OSError, AttributeError):  # pidfd: Linux 5.3+
            self._pidfd = os.pidfd_open(supervisor_pid)
            self._loop.add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        self.supervisor_exited = True
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
        self.wake()

    def wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def changed(self) -> bool:
        """Until something changed (True) or a bounded wait passed (False): a missed event, or a
        supervisor killed where there is no pidfd, costs no hang."""
        waiter = self._loop.create_future()
        self._waiters.add(waiter)
        timeout = SAFETY_WAIT_SECONDS if self.precise else POLL_SECONDS
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def close(self) -> None:
        if self._wd is not None:
            self._inotify.remove(self._wd, self.wake)
            self._wd = None
            self.precise = False
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None
        self.wake()


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    """The C library of this process (looked up once: no ``ldconfig`` run per job)."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _inotify_fd() -> int | None:
    """A non-blocking inotify descriptor (None where inotify is not available)."""
    libc = _libc()
    if libc is None:
        return None
    try:
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    except AttributeError:
        return None
    return fd if fd >= 0 else None


class _TailStream:
    """One output file read as it grows; ends once the run ended and the file is drained."""

    def __init__(self, execution: DetachedExecution, name: str, offset: int) -> None:
        self.execution = execution
        self.path = execution.job_dir / STREAM_FILES[name]
        self.name = name
        self.offset = offset
        self.drained = False
        self.marked = False  # the overflow mark was delivered
        self._file: Any = None
        self._closed = False

    async def read(self, n: int = -1) -> bytes:
        execution = self.execution
        size = n if n > 0 else 1024 * 1024
        check_alive = False
        while True:
            if execution.detached:  # the runtime let the run go: this reader ends, not the run
                raise asyncio.CancelledError
            if self._closed:  # released: the end of this stream, as a closed pipe is
                return b""
            ended = execution.ended(check_alive)  # before the read: all output is in by then
            chunk = self._read(size)
            if chunk:
                return chunk
            if ended:
                self.drained = True
                return await execution.after_drain(self)
            check_alive = not await execution.watch.changed()

    def _read(self, size: int) -> bytes:
        if self._closed:  # never opened again once closed (the handle would leak)
            return b""
        if self._file is None:
            try:
                self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
            except FileNotFoundError:
                return b""
        chunk: bytes = os.pread(self._file.fileno(), size, self.offset)
        self.offset += len(chunk)
        return chunk

    def close(self) -> None:
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None


class DetachedExecution:
    """A run under its own supervisor process, followed through its files."""

    persists_output = True

    def __init__(
        self,
        *,
        inotify: _Inotify,
        job_dir: Path,
        argv: list[str],
        supervisor_pid: int,
        supervisor_start: float | None,
        offsets: Mapping[str, int] | None = None,
    ) -> None:
        self.job_dir = job_dir
        self.argv = argv
        self.ref = ExecutionRef(supervisor_pid, supervisor_start)
        self.detached = False
        self.watch = _DirectoryWatch(inotify, job_dir, supervisor_pid)
        self._streams = {
            name: _TailStream(self, name, (offsets or {}).get(name, 0)) for name in STREAMS
        }
        self._exit: dict[str, Any] | None = None
        self._all_drained = asyncio.get_running_loop().create_future()
        self._released = False
        # Told the exit record before ``wait`` returns: why the supervisor itself stopped the
        # run (its wall-clock backstop, the cap, a write error) when no runtime was watching.
        self.on_exit: Callable[[dict[str, Any]], None] | None = None

    @property
    def streams(self) -> Mapping[str, ByteStream]:
        return self._streams

    def resume_from(self, offsets: Mapping[str, int]) -> None:
        """Where each stream continues (before it is first read): after what was consumed."""
        for name, offset in offsets.items():
            self._streams[name].offset = offset

    # -- the run's end --------------------------------------------------------------------
    def exit_record(self) -> dict[str, Any] | None:
        if self._exit is None:
            try:
                self._exit = json.loads((self.job_dir / job_supervisor.EXIT_FILE).read_text())
            except (FileNotFoundError, ValueError):
                return None
        return self._exit

    def ended(self, check_alive: bool = True) -> bool:
        """The supervisor wrote the exit record, or is gone without one (killed)."""
        if self.exit_record() is not None:
            return True
        if self.watch.supervisor_exited or check_alive:
            return not self._supervisor_alive()
        return False

    def _supervisor_alive(self) -> bool:
        pid, start = self.ref.pid, self.ref.start_time
        return supervisor_alive(pid, start)

    async def after_drain(self, stream: _TailStream) -> bytes:
        """The end of a drained stream; an overflow shows as one byte past the cap once both
        streams are drained (the runtime counts it, keeps nothing of it, and fails the job)."""
        if all(s.drained for s in self._streams.values()) and not self._all_drained.done():
            self._all_drained.set_result(None)
        record = self.exit_record()
        if stream.name != "stdout" or not (record and record.get("overflowed")):
            return b""
        await asyncio.shield(self._all_drained)
        if stream.marked:
            return b""
        stream.marked = True
        return OVERFLOW_MARK

    async def wait(self) -> int | None:
        check_alive = True
        while not self.ended(check_alive):
            if self.detached:
                raise asyncio.CancelledError
            check_alive = not await self.watch.changed()
        record = self.exit_record()
        if record is not None and self.on_exit is not None:
            self.on_exit(record)
        code = record.get("exit_code") if record else None
        return code if isinstance(code, int) else None

    # -- stopping -------------------------------------------------------------------------
    async def stop(self, grace_seconds: float) -> None:
        """The supervisor stops the group (TERM, KILL after its grace); past ours, we kill it."""
        if self.ended():
            return
        if self._supervisor_alive() and self.ref.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.ref.pid, signal.SIGTERM)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._until_ended(), grace_seconds + 0.5)
        self._kill_cli_group()

    async def _until_ended(self) -> None:
        check_alive = True
        while not self.ended(check_alive):
            check_alive = not await self.watch.changed()

    def _kill_cli_group(self) -> None:
        """Kill the CLI's group if it is still the same (a supervisor killed without cleaning)."""
        info = read_supervisor_file(self.job_dir)
        if info:
            kill_group_of(info.get("cli_pid"), info.get("cli_start_time"))

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if not self._supervisor_alive():
            self._kill_cli_group()  # the supervisor does it itself when it ends normally
        self._close()

    def detach(self) -> None:
        """Let the run go on without this runtime: readers and waiters stop, nothing is killed."""
        self.detached = True
        self._close()

    def _close(self) -> None:
        self.watch.close()
        for stream in self._streams.values():
            stream.close()


class DetachedExecutor:
    """Runs each job under its own supervisor process (see the module docstring)."""

    name = "detached"

    def __init__(self, boundary: Boundary, config: RuntimeConfig) -> None:
        self.boundary = boundary
        self.config = config
        self._live: set[DetachedExecution] = set()
        self._host = _Host()
        self._watcher: _Inotify | None = None

    async def launch(self, request: LaunchRequest) -> DetachedExecution:
        argv = request.argv
        if request.isolated:
            cwd = request.cwd or os.getcwd()
            argv = self.boundary.wrap(request.argv, cwd=cwd, mounts=request.mounts)
        stdin = request.stdin
        spec = {
            "job_dir": str(request.job_dir),
            "argv": argv,
            "cwd": request.cwd,
            "env": dict(request.env),
            "stdin": base64.b64encode(stdin).decode() if stdin is not None else None,
            "cap_bytes": self.config.output_cap_bytes,
            "grace_seconds": self.config.kill_grace_seconds,
            # A backstop for a run no server follows any more; the runtime's limits come first.
            "wall_seconds": self.config.wall_timeout_seconds + self.config.kill_grace_seconds,
        }
        starting = asyncio.ensure_future(self._host.request(json.dumps(spec).encode()))
        try:
            answer = await asyncio.shield(starting)
        except asyncio.CancelledError:  # nothing may be left running when launch raises
            starting.add_done_callback(_stop_unwanted)
            raise
        if "error" in answer:
            raise OSError(answer.get("errno") or 0, answer["error"])
        pid = int(answer["pid"])
        execution = DetachedExecution(
            inotify=self._inotify(),
            job_dir=request.job_dir,
            argv=argv,
            supervisor_pid=pid,
            supervisor_start=process_start_time(pid),
        )
        return self._track(execution)

    def _inotify(self) -> _Inotify:
        """The executor's one inotify descriptor, made on first use (on the runtime's loop)."""
        if self._watcher is None:
            self._watcher = _Inotify()
        return self._watcher

    def _track(self, execution: DetachedExecution) -> DetachedExecution:
        self._live.add(execution)
        return execution

    def stop_orphan(self, ref: ExecutionRef) -> bool:
        """A run this executor cannot follow (a local run of an earlier runtime): kill its group."""
        return kill_group_of(ref.pid, ref.start_time)

    def reattach(self, ref: ExecutionRef, job_dir: Path) -> DetachedExecution | None:
        """Follow a detached run again: alive, or ended while no runtime was up (its files then
        hold the rest). None for a run of another executor (no supervisor file)."""
        info = read_supervisor_file(job_dir)
        if info is None or info.get("pid") != ref.pid:
            return None
        offsets = {name: _size(job_dir / STREAM_FILES[name]) for name in STREAMS}
        return self._track(
            DetachedExecution(
                inotify=self._inotify(),
                job_dir=job_dir,
                argv=[],
                supervisor_pid=int(info["pid"]),
                supervisor_start=ref.start_time,
                offsets=offsets,
            )
        )

    def detach_all(self) -> None:
        """The runtime stops and leaves its runs going: their supervisors finish them."""
        for execution in list(self._live):
            if not execution._released:
                execution.detach()
        self._live.clear()

    async def close(self) -> None:
        """Let the supervisor host go (the runs it started are not affected)."""
        await self._host.close()
        if self._watcher is not None:
            watcher, self._watcher = self._watcher, None
            watcher.close()


class _Host:
    """The runtime's supervisor host (``job_supervisor.main``): started once, it forks one
    supervisor per job, so a launch costs a fork, not a Python start (tens of milliseconds).
    It is a child of the runtime and ends with it (its stdin closes; asyncio kills a child it
    still holds at exit); the supervisors it forked are in sessions of their own and carry on."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._lock: asyncio.Lock | None = None  # one request at a time on the host's pipes

    async def request(self, spec: bytes) -> dict[str, Any]:
        """Hand a job to the host and read its answer. Never cancelled halfway (the caller
        shields it): an answer left unread would be taken for the next job's."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            for attempt in range(2):  # a host that died (killed by hand) is started again
                process = self._process
                if process is None or process.returncode is not None:
                    process = self._process = await _start_host()
                assert process.stdin is not None and process.stdout is not None
                try:
                    process.stdin.write(spec + b"\n")
                    await process.stdin.drain()
                    line = await process.stdout.readline()
                except (BrokenPipeError, ConnectionResetError):
                    line = b""
                if line:
                    return _parse_answer(line)
                if attempt == 0:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
            return {"error": "the job supervisor host did not answer"}

    async def close(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.stdin is not None:
            process.stdin.close()  # EOF: it exits at once
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), 10)


def stop_unrecorded_run(job_dir: Path) -> bool:
    """A run whose start was never recorded (the runtime died as it launched): stop it, so
    nothing runs without a record. True if there was one."""
    info = read_supervisor_file(job_dir)
    if info is None or (job_dir / job_supervisor.EXIT_FILE).exists():
        return False
    supervisor, cli = info.get("pid"), info.get("cli_pid")
    if isinstance(supervisor, int) and is_same_process(supervisor, info.get("start_time")):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(supervisor, signal.SIGKILL)  # first: it would record an exit, not stop it
    if isinstance(cli, int):
        kill_group_of(cli, info.get("cli_start_time"))
    return True


def supervisor_alive(pid: int | None, start_time: float | None) -> bool:
    """The same supervisor process, still running (a zombie no one reaped counts as gone)."""
    if not is_same_process(pid, start_time):
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def read_supervisor_file(job_dir: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((job_dir / job_supervisor.SUPERVISOR_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _stop_unwanted(starting: asyncio.Future[dict[str, Any]]) -> None:
    """A supervisor started for a launch that was cancelled meanwhile: stop its run."""
    with contextlib.suppress(Exception):
        pid = int(starting.result()["pid"])
        os.kill(pid, signal.SIGTERM)


async def _start_host() -> asyncio.subprocess.Process:
    """The supervisor host, in a session of its own, waiting for job specs on stdin."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-S",
        SUPERVISOR_SCRIPT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={"PATH": os.defpath},
    )


def _parse_answer(line: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    return answer if isinstance(answer, dict) else {"error": "the job supervisor answered badly"}

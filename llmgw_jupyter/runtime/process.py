"""Child processes in their own session, so a cancel reaches the whole process group.

Codex's npm launcher on Node 20 leaves the native binary as a child: signalling only the launcher
would orphan the real worker.

A child is started off the event loop: ``fork``/``exec``, the prompt's first 64 KiB and the
process's identity are done in a worker thread (``subprocess.Popen``), and only the pipes are
connected to the loop. Its exit is seen through a pidfd the loop watches (Linux 5.3+), so no
thread waits per child (asyncio's ``ThreadedChildWatcher`` starts one for every child on 3.11,
and child watchers are deprecated from 3.12); without pidfds one small thread per child waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TypeVar

import psutil

STREAM_LIMIT = 2**16
T = TypeVar("T")

_pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(name: str) -> concurrent.futures.ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(name)
        if pool is None:
            pool = _pools[name] = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"llmgw-{name}"
            )
        return pool


def _forget_pools() -> None:
    """A forked child has none of its parent's threads: it makes its own pools if it needs any."""
    _pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def launcher() -> concurrent.futures.ThreadPoolExecutor:
    """The thread jobs are prepared and started in: one, so launches keep the order and the
    one-at-a-time sequence they had on the loop (a provider's files are never written twice at
    once), without the loop waiting for a file system or a fork.

    The thread lives as long as the process, as the loop's thread does: bubblewrap's
    ``--die-with-parent`` (``PR_SET_PDEATHSIG``) follows the thread that started the child."""
    return _pool("launch")


def file_maker() -> concurrent.futures.ThreadPoolExecutor:
    """A thread for files made ahead of need (a job's output file while its CLI starts in the
    launcher): beside the launcher, not queued behind it."""
    return _pool("files")


async def off_loop(call: Callable[[], T], *, undo: Callable[[T], None] | None = None) -> T:
    """``call()`` in the launcher thread. Should the awaiting task be cancelled meanwhile, the
    call still completes in its thread and ``undo`` gets what it made, there (nothing may be
    left running by a cancelled launch)."""
    done = launcher().submit(call)
    try:
        return await asyncio.wrap_future(done)
    except asyncio.CancelledError:
        if undo is not None:
            done.add_done_callback(functools.partial(_undo_result, undo=undo))
        raise


def _undo_result(done: concurrent.futures.Future[T], undo: Callable[[T], None]) -> None:
    if not done.cancelled() and done.exception() is None:
        undo(done.result())


@dataclass
class StartedChild:
    """What the launcher thread hands back to the loop."""

    popen: subprocess.Popen[bytes]
    argv: list[str]
    start_time: float | None
    pidfd: int | None  # None: no pidfd here, a thread waits instead
    stdin_rest: bytes  # the part of the prompt the pipe did not take at once


def start_child(
    argv: list[str], *, cwd: str | None, env: dict[str, str], stdin: bytes | None
) -> StartedChild:
    """Start ``argv`` in a session of its own (blocking: run it in the launcher thread)."""
    popen = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    rest = b""
    try:
        if popen.stdin is not None:
            rest = _write_what_fits(popen.stdin, stdin or b"")
        pidfd = _pidfd_open(popen.pid)
    except BaseException:
        kill_started(popen)
        raise
    return StartedChild(popen, argv, process_start_time(popen.pid), pidfd, rest)


def _write_what_fits(pipe: IO[bytes], data: bytes) -> bytes:
    """Write without blocking; close stdin once all of it is in (an open stdin makes ``codex
    exec`` wait forever). Returns what is left for the loop to write."""
    fd = pipe.fileno()
    os.set_blocking(fd, False)
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except BlockingIOError:
        return bytes(view)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the CLI does not read its stdin: nothing more to give it
    pipe.close()
    return b""


def _pidfd_open(pid: int) -> int | None:
    pidfd_open = getattr(os, "pidfd_open", None)  # Linux 5.3+
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:  # ENOSYS (old kernel), EPERM (a seccomp filter)
        return None
    return fd


def kill_started(child: subprocess.Popen[bytes] | StartedChild) -> None:
    """Kill a group that must not run after all (its launch was cancelled or failed)."""
    popen = child.popen if isinstance(child, StartedChild) else child
    signal_group(popen.pid, signal.SIGKILL)
    for pipe in (popen.stdin, popen.stdout, popen.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    if isinstance(child, StartedChild) and child.pidfd is not None:
        os.close(child.pidfd)
    threading.Thread(target=popen.wait, name="llmgw-reap", daemon=True).start()


class _PipeStream:
    """One output pipe read on the loop; a reader that gives up (cancelled) closes the pipe."""

    def __init__(self, reader: asyncio.StreamReader, transport: asyncio.ReadTransport) -> None:
        self._reader = reader
        self._transport = transport

    async def read(self, n: int = -1) -> bytes:
        try:
            return await self._reader.read(n)
        except asyncio.CancelledError:
            self._transport.close()
            raise

    def close(self) -> None:
        self._transport.close()


class _StdinProtocol(asyncio.Protocol):
    """The rest of a long prompt: the transport writes it as the CLI reads, then closes."""

    def __init__(self) -> None:
        self.lost = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True  # a CLI that stopped reading its stdin is not an error of the runtime


class CliProcess:
    """A job's group leader, with a wait that ends when the leader exits.

    The wait does not wait for the pipes: a grandchild that inherited stdout must not keep a
    finished CLI "running" (or a cancel waiting out the whole grace period)."""

    def __init__(
        self,
        child: StartedChild,
        stdout: _PipeStream,
        stderr: _PipeStream,
        exited: asyncio.Future[int],
        stdin: tuple[asyncio.WriteTransport, _StdinProtocol] | None,
    ) -> None:
        self._popen = child.popen  # kept until reaped (a collected Popen is reaped by others)
        self.argv = child.argv  # as started (with the boundary's wrapper)
        self.pid = child.popen.pid
        self.start_time = child.start_time
        self.stdout = stdout
        self.stderr = stderr
        self.exited = exited
        self._stdin: asyncio.WriteTransport | None = stdin[0] if stdin else None
        self._stdin_protocol = stdin[1] if stdin else _StdinProtocol()

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    async def wait_exit(self) -> int:
        return await asyncio.shield(self.exited)

    def close_stdin(self) -> None:
        """Give up on what is left of the prompt (the job is over)."""
        if self._stdin is not None and not self._stdin_protocol.lost:
            self._stdin.abort()


async def spawn(
    argv: list[str] | Callable[[], list[str]],
    *,
    cwd: str | None,
    env: dict[str, str],
    stdin: bytes | None,
) -> CliProcess:
    """Start ``argv`` off the loop and connect its pipes and its exit to the loop.

    ``argv`` may be a function that builds the command line: it is called in the launcher
    thread too (the isolation boundary's wrapper checks paths on the file system)."""

    def start() -> StartedChild:
        command = argv() if callable(argv) else argv
        return start_child(command, cwd=cwd, env=env, stdin=stdin)

    child = await off_loop(start, undo=kill_started)
    try:
        return await _connect(child)
    except BaseException:
        kill_started(child)
        raise


async def _connect(child: StartedChild) -> CliProcess:
    loop = asyncio.get_running_loop()
    popen = child.popen
    assert popen.stdout is not None and popen.stderr is not None
    streams: list[_PipeStream] = []
    stdin: tuple[asyncio.WriteTransport, _StdinProtocol] | None = None
    try:
        for pipe in (popen.stdout, popen.stderr):
            reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            transport, _ = await loop.connect_read_pipe(functools.partial(_same, protocol), pipe)
            streams.append(_PipeStream(reader, transport))
        if child.stdin_rest and popen.stdin is not None:
            stdin = await loop.connect_write_pipe(_StdinProtocol, popen.stdin)
            stdin[0].write(child.stdin_rest)
            stdin[0].close()  # once the buffer is written
    except BaseException:
        for stream in streams:
            stream.close()
        if stdin is not None:
            stdin[0].abort()
        raise
    exited = _watch_exit(loop, child)
    return CliProcess(child, streams[0], streams[1], exited, stdin)


def _same(protocol: asyncio.BaseProtocol) -> asyncio.BaseProtocol:
    return protocol


def _watch_exit(loop: asyncio.AbstractEventLoop, child: StartedChild) -> asyncio.Future[int]:
    """A future of the exit code, set when the leader exits (it is reaped then)."""
    exited: asyncio.Future[int] = loop.create_future()
    popen, pidfd = child.popen, child.pidfd

    def wait_in_thread() -> None:
        def wait() -> None:
            code = popen.wait()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_set_exit, exited, code)

        threading.Thread(target=wait, name=f"llmgw-wait-{popen.pid}", daemon=True).start()

    if pidfd is None:
        wait_in_thread()
        return exited

    def on_exit() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        code = popen.poll()  # reaps it
        if code is None:  # readable yet not reapable (a leader gone before its threads)
            wait_in_thread()
        else:
            _set_exit(exited, code)

    loop.add_reader(pidfd, on_exit)
    return exited


def _set_exit(exited: asyncio.Future[int], code: int) -> None:
    if not exited.done():
        exited.set_result(code)


def process_start_time(pid: int) -> float | None:
    """Start time identifies a process across pid reuse."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def is_same_process(pid: int | None, start_time: float | None) -> bool:
    if not pid or start_time is None:
        return False
    current = process_start_time(pid)
    return current is not None and abs(current - start_time) < 0.05


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal a whole process group; False when it is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def kill_group_of(pid: int | None, start_time: float | None) -> bool:
    """SIGKILL the process group led by ``pid`` if it is still the process that started at
    ``start_time`` (a recorded run: never a stranger that reused the pid); True if it was."""
    if not pid or not is_same_process(pid, start_time):
        return False
    signal_group(pid, signal.SIGKILL)
    return True


async def terminate_group(process: CliProcess, grace_seconds: float) -> None:
    """SIGTERM the group, then SIGKILL it if the leader is still there after the grace period."""
    pgid = process.pid
    signal_group(pgid, signal.SIGTERM)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(process.wait_exit(), grace_seconds)
    signal_group(pgid, signal.SIGKILL)

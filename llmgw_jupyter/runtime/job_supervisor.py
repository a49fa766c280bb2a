"""One detached job's own supervisor process: the CLI runs under it, not under the Jupyter server.

Standard library only, and run by path (``python -I -S job_supervisor.py``): it must start fast
and import nothing of the gateway. ``detached.py`` starts it once per runtime as a host (in a new
session) and writes one job spec (JSON) per line to its stdin. For each, the host forks a
supervisor in a session of its own (no child of the server, not killed with the server's group),
which starts the CLI as the leader of its own process group (bubblewrap, when isolated, so
``--die-with-parent`` refers to the supervisor), answers one JSON line (its pid and the CLI's,
or why the CLI could not start), then:

- writes the CLI's stdin and closes it;
- appends stdout and stderr straight to the job's output files, under the shared byte cap (on
  overflow the group is stopped: no server may be watching);
- on SIGTERM (the runtime's stop) or past the wall-clock backstop, stops the group: SIGTERM,
  SIGKILL after the grace period;
- once the leader exited, kills what is left of the group, drains the pipes and writes
  ``exit.json`` atomically (exit code, end time, why it was stopped), then exits.

Files in the job's directory: ``supervisor.json`` (pids and start times: the marker of a detached
job), ``exit.json``, ``supervisor.log`` (this process's own errors).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STREAM_FILES = {"stdout": "stdout.jsonl", "stderr": "stderr.log"}  # as runtime/output.py
SUPERVISOR_FILE = "supervisor.json"
EXIT_FILE = "exit.json"
LOG_FILE = "supervisor.log"
READ_CHUNK = 64 * 1024
DRAIN_SECONDS = 5.0  # after the group is killed, pipes close at once; a bound all the same
MAX_SPEC_BYTES = 64 * 1024 * 1024


def write_json_atomically(path: Path, value: dict[str, Any]) -> None:
    """Write then rename: a reader sees the whole record or none. Not fsynced, like the store
    (WAL, synchronous=NORMAL): it outlives any process, not a power cut."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(value).encode())
    finally:
        os.close(fd)
    os.replace(temporary, path)


def start_time(pid: int) -> float | None:
    """The process's start as psutil computes ``create_time`` (boot time + start ticks)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith(b"btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


class Supervisor:
    """Runs one CLI to its end; see the module docstring."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.job_dir = Path(spec["job_dir"])
        self.argv: list[str] = spec["argv"]
        self.cwd: str | None = spec.get("cwd")
        self.env: dict[str, str] = spec["env"]
        self.stdin = base64.b64decode(spec["stdin"]) if spec.get("stdin") is not None else None
        self.cap = int(spec["cap_bytes"])
        self.grace = float(spec["grace_seconds"])
        self.deadline = time.monotonic() + float(spec["wall_seconds"])
        self.written = 0
        self.overflowed = False
        self.stopped: str | None = None
        self.kill_at: float | None = None
        self.files: dict[str, int] = {}
        self.error: str | None = None

    def start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.PIPE if self.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own group: a stop reaches the CLI's children
            close_fds=True,
        )

    def catch_signals(self) -> None:
        """Before the CLI starts: a stop arriving early must not kill this process alone."""
        self.wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        os.set_blocking(self.wake_read, False)
        signal.set_wakeup_fd(wake_write)
        # Handled through the wakeup fd (SIGHUP: ignored, yet the CLI gets the default back).
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(signum, lambda *_: None)

    def run(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        wake_read = self.wake_read
        selector = selectors.DefaultSelector()
        selector.register(wake_read, selectors.EVENT_READ, "wake")
        assert process.stdout is not None and process.stderr is not None
        selector.register(process.stdout, selectors.EVENT_READ, "stdout")
        selector.register(process.stderr, selectors.EVENT_READ, "stderr")
        pending_stdin = self.stdin or b""
        if process.stdin is not None:
            os.set_blocking(process.stdin.fileno(), False)
            if pending_stdin:
                selector.register(process.stdin, selectors.EVENT_WRITE, "stdin")
            else:
                process.stdin.close()
        open_streams = 2
        drain_until: float | None = None
        while open_streams:
            now = time.monotonic()
            if drain_until is None and process.poll() is not None:
                self.signal_group(signal.SIGKILL)  # leftovers must not outlive the job
                drain_until = now + DRAIN_SECONDS
            if drain_until is not None and now >= drain_until:
                break
            if self.stopped is None and now >= self.deadline:
                self.stop("wall_timeout")
            if self.kill_at is not None and now >= self.kill_at and process.poll() is None:
                self.signal_group(signal.SIGKILL)
                self.kill_at = None
            timeout = min(
                t for t in (drain_until, self.kill_at, self.deadline, now + 1.0) if t is not None
            )
            for key, _ in selector.select(max(0.0, timeout - now)):
                if key.data == "wake":
                    signals = _read_all(wake_read)
                    if signals and any(s in (signal.SIGTERM, signal.SIGINT) for s in signals):
                        self.stop("stop")
                elif key.data == "stdin":
                    pending_stdin = self.feed_stdin(selector, pending_stdin)
                else:
                    chunk = _read_some(key.fileobj)
                    if chunk:
                        self.keep(key.data, chunk)
                    else:
                        selector.unregister(key.fileobj)
                        open_streams -= 1
        exit_code = process.wait()
        self.signal_group(signal.SIGKILL)
        self.finish(exit_code)

    def feed_stdin(self, selector: selectors.BaseSelector, pending: bytes) -> bytes:
        """Write the prompt without blocking, then close stdin (``codex exec`` waits for EOF)."""
        stdin = self.process.stdin
        assert stdin is not None
        try:
            written = os.write(stdin.fileno(), pending[:READ_CHUNK])
            pending = pending[written:]
        except BlockingIOError:
            return pending
        except (BrokenPipeError, ConnectionResetError):
            pending = b""
        if not pending:
            selector.unregister(stdin)
            with contextlib.suppress(OSError):
                stdin.close()
        return pending

    def keep(self, stream: str, chunk: bytes) -> None:
        """Append what fits under the cap; past it the job is stopped (the rest is drained)."""
        room = self.cap - self.written
        if len(chunk) > room:
            chunk = chunk[: max(room, 0)]
            if not self.overflowed:
                self.overflowed = True
                self.stop("overflow")
        if not chunk or self.error is not None:
            return
        try:
            fd = self.files.get(stream)
            if fd is None:
                fd = self.files[stream] = os.open(
                    self.job_dir / STREAM_FILES[stream],
                    os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                    0o600,
                )
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            self.written += len(chunk)
        except OSError as error:
            self.error = f"could not store the job's output: {error}"
            self.stop("write_error")

    def stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
        if self.kill_at is None and self.process.poll() is None:
            self.signal_group(signal.SIGTERM)
            self.kill_at = time.monotonic() + self.grace

    def signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def finish(self, exit_code: int | None) -> None:
        for fd in self.files.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        record = {
            "exit_code": exit_code,
            "ended_at": time.time(),
            "stopped": self.stopped,
            "overflowed": self.overflowed,
            "error": self.error,
        }
        write_json_atomically(self.job_dir / EXIT_FILE, record)


def _read_some(pipe: Any) -> bytes:
    try:
        return os.read(pipe.fileno(), READ_CHUNK)
    except OSError:
        return b""


def _read_all(fd: int) -> bytes:
    data = b""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while chunk := os.read(fd, 256):
            data += chunk
    return data


def supervise(spec: dict[str, Any], done: int) -> None:
    """In a forked child: start the job's CLI, answer the runtime straight on the host's stdout
    (one process hop less), tell the host on ``done``, supervise the CLI to its end."""
    os.setsid()  # leads its own group: the runtime's SIGTERM reaches this process only
    answer = os.dup(1)  # the runtime's pipe, for the one answer line only
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)  # the host's pipes (the runtime's) are not this job's
    os.dup2(null, 1)
    supervisor = Supervisor(spec)
    job_dir = supervisor.job_dir
    log = os.open(job_dir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 2)
    supervisor.catch_signals()
    try:
        process = supervisor.start()
    except OSError as error:
        _answer(answer, done, {"error": str(error), "errno": error.errno})
        return
    supervisor.process = process
    own = os.getpid()
    write_json_atomically(
        job_dir / SUPERVISOR_FILE,
        {
            "pid": own,
            "start_time": start_time(own),
            "cli_pid": process.pid,
            "cli_start_time": start_time(process.pid),
            "cap_bytes": supervisor.cap,
        },
    )
    _answer(answer, done, {"pid": own, "cli_pid": process.pid})
    supervisor.run(process)


def _answer(answer: int, done: int, value: dict[str, Any]) -> None:
    """One line (well under PIPE_BUF: written at once), then one byte to the host."""
    with contextlib.suppress(OSError):  # a runtime gone already must not orphan the CLI
        os.write(answer, json.dumps(value).encode() + b"\n")
    with contextlib.suppress(OSError):
        os.write(done, b"1")
    os.close(answer)
    os.close(done)


def _reap(*_: Any) -> None:
    """The host's forked supervisors, once they ended (none may stay a zombie)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def main() -> int:
    """The host: one warm process per runtime, its child, reading one job spec per line on
    stdin. Each job gets a forked supervisor (a fork costs about a millisecond, a Python start
    tens), which answers with one line on stdout (the host only when it died before that). A
    closed stdin (the runtime stopped or died) ends the host; the supervisors it forked carry
    on."""
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C in the server's terminal is not ours
    while line := sys.stdin.buffer.readline(MAX_SPEC_BYTES):
        spec = json.loads(line)
        read_end, write_end = os.pipe()
        if os.fork() == 0:
            os.close(read_end)
            try:
                supervise(spec, write_end)
            except BaseException:
                import traceback  # only on this unexpected path: kept out of the start-up

                traceback.print_exc()  # into supervisor.log
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as done:
            answered = done.read(1)
        if not answered:  # the supervisor died before answering: the runtime must not wait
            sys.stdout.buffer.write(b'{"error": "the job supervisor died at start"}\n')
            sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

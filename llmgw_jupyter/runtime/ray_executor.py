"""The Ray executor: each job is one Ray job on an existing cluster (Ray's Job Submission SDK).

The entrypoint runs the provider's validated argv: every argument ``shlex.quote``-d, ``cd`` into
the real working directory (no ``runtime_env.working_dir``: the agent would edit a zipped copy),
``env -i`` with exactly the job's allow-listed environment, read from a 0600 file in the job dir
(values never appear in the entrypoint, which Ray shows in its dashboard), and the prompt from a
0600 file redirected to stdin (Ray gives an entrypoint no stdin). The CLI's stderr goes to the
job's stderr file; so the job dir and the working dir must be visible to the worker (a shared
filesystem, as the notebook directory is on a JupyterHub next to a KubeRay cluster).

Progress comes from ``tail_job_logs`` (not the driver log file on the head's disk: it is the
one way that also works when the head is another machine; it lags 1-3 s, which an agent job of
minutes does not notice). Ray's own lines are dropped: everything before a start line the
entrypoint prints (with a per-job nonce), and Ray's ``Running entrypoint for job <id>: ...``
line, which Ray appends from another file handle after starting the entrypoint, so that it can
land after the CLI's first output. The stream always starts at byte 0, so a run followed again
after a restart skips what the job's stdout file already holds; only whole lines reach that
file. ``wait`` comes from the job status and ``driver_exit_code``; ``stop`` is ``stop_job`` (Ray
signals the whole tree). The submission id is our job id, and ``ray.json`` in the job dir says
the run is on Ray (``reattach``).

Ray is an optional extra (``pip install llmgw-jupyter[ray]``): it is imported on first use.
Isolation is the worker's business here, not ours: an isolated request (a grant's job, or the
owner's with ``isolate_owner``) is refused unless ``ray_isolation_ok`` says the cluster's
workers are the boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shlex
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from llmgw_jupyter.errors import ErrorCategory, GatewayError, InvalidInputError
from llmgw_jupyter.runtime.config import RuntimeConfig
from llmgw_jupyter.runtime.executor import STREAMS, ByteStream, ExecutionRef, LaunchRequest
from llmgw_jupyter.runtime.output import STREAM_FILES
from llmgw_jupyter.runtime.process import kill_group_of

RAY_FILE = "ray.json"  # in the job dir: the run is a Ray job (submission id, entrypoint)
PROMPT_FILE = "ray-prompt"
ENV_FILE = "ray-env.sh"
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
STATUS_POLL_SECONDS = 0.5
STATUS_FAILURES = 60  # consecutive failed status calls (30 s) before the end is called unknown
FILE_POLL_SECONDS = 0.1
LOG_DRAIN_SECONDS = 30.0  # after the end: Ray's log tail lags a few seconds behind
MAX_HEADER_BYTES = 256 * 1024  # Ray's lines before the CLI's output, bounded
TAIL_RETRIES = 5
MAX_PARTIAL_BYTES = 1024 * 1024  # a line longer than this is handed on unfinished
START_MARK = "llmgw-ray-start"
_NONCE = re.compile(r"^[0-9a-f]{8,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_DETACHED = object()


def ray_unavailable_reason() -> str | None:
    """Why the Ray executor cannot run here (None: it can)."""
    try:
        import ray.job_submission  # noqa: F401
    except ImportError as error:
        return f"the ray extra is not installed (pip install 'llmgw-jupyter[ray]'): {error}"
    return None


def start_line(nonce: str) -> str:
    """The line the entrypoint prints before the CLI starts (never literally in the entrypoint,
    which Ray echoes into the same log)."""
    return f"{START_MARK}-{nonce}\n"


def entrypoint_for(
    request: LaunchRequest,
    *,
    nonce: str,
    env_file: Path,
    prompt_file: Path | None,
    stderr_file: Path,
) -> str:
    """The shell line Ray runs: every part quoted, nothing of the job's environment in it."""
    cwd = request.cwd or str(request.job_dir)
    stdin = shlex.quote(str(prompt_file)) if prompt_file is not None else "/dev/null"
    run = " ".join(shlex.quote(part) for part in request.argv)
    if not _NONCE.match(nonce):
        raise ValueError("nonce must be hex")
    return (
        f"exec 2>>{shlex.quote(str(stderr_file))} && printf '%s-%s\\n' {START_MARK} {nonce} && "
        f"cd {shlex.quote(cwd)} && "
        f'exec /usr/bin/env -i /bin/sh -c \'. "$1" && shift && exec "$@"\' sh '
        f"{shlex.quote(str(env_file))} {run} <{stdin}"
    )


def env_script(env: Mapping[str, str]) -> str:
    """The job's environment as ``export`` lines for ``sh`` (names validated, values quoted)."""
    lines = []
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise InvalidInputError("env", f"variable name {name!r} must match {_ENV_NAME.pattern}")
        if "\0" in value:
            raise InvalidInputError("env", f"variable {name} must not contain a NUL byte")
        lines.append(f"export {name}={shlex.quote(value)}\n")
    return "".join(lines)


def write_private(path: Path, data: bytes) -> None:
    """A file only the gateway's user can read (never following a planted symlink)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, 0o600)
        handle.write(data)


class _LogStream:
    """The CLI's stdout from Ray's log tail, without Ray's header, written to the job's file."""

    def __init__(self, execution: RayExecution, skip: int) -> None:
        self.execution = execution
        self.skip = skip  # body bytes the runtime already consumed (a run followed again)
        self.path = execution.job_dir / STREAM_FILES["stdout"]
        self._file_size = skip  # body bytes already in the file: delivered again, not rewritten
        self._delivered = skip  # body offset of the next byte ``read`` returns
        self.drained = asyncio.Event()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._pending = b""
        self._task: asyncio.Task[None] | None = None
        self._taken = 0  # body bytes after ``skip`` seen so far (queued, or in ``_partial``)
        self._partial = b""  # only whole lines are queued
        self._finishing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._follow())

    async def read(self, n: int = -1) -> bytes:
        self.start()
        if not self._pending:
            item = await self._queue.get()
            if item is _DETACHED:
                raise asyncio.CancelledError
            if item is None:
                self.drained.set()
                return b""
            assert isinstance(item, bytes)
            self._pending = item
        size = n if n > 0 else len(self._pending)
        chunk, self._pending = self._pending[:size], self._pending[size:]
        new = chunk[max(0, self._file_size - self._delivered) :]
        self._delivered += len(chunk)
        new = new[: max(0, self._room())]  # past the cap: counted by the runtime, never stored
        if new:
            with open(self.path, "ab") as handle:  # persisted before the runtime counts it
                handle.write(new)
            self._file_size += len(new)
        return chunk

    def _room(self) -> int:
        """What the output cap leaves for stdout (the worker writes stderr straight to disk)."""
        cap = self.execution.executor.config.output_cap_bytes
        try:
            stderr = (self.execution.job_dir / STREAM_FILES["stderr"]).stat().st_size
        except FileNotFoundError:
            stderr = 0
        return cap - stderr - self._file_size

    async def _follow(self) -> None:
        """Tail Ray's log (again from byte 0 after a dropped connection), body bytes only."""
        try:
            for attempt in range(TAIL_RETRIES):
                try:
                    async for offset, chunk in self._body(self.execution.tail()):
                        self._take(offset, chunk)
                    return
                except (RuntimeError, OSError):
                    if attempt == TAIL_RETRIES - 1 or await self.execution.is_terminal():
                        return
                    await asyncio.sleep(1.0)
        finally:
            if not self._finishing:
                self._end()

    def _take(self, offset: int, chunk: bytes) -> None:
        """Queue the whole lines of what was not taken yet (a restart never resumes mid-line)."""
        data = chunk[max(0, self.skip + self._taken - offset) :]
        self._taken += len(data)
        self._partial += data
        cut = self._partial.rfind(b"\n") + 1
        if len(self._partial) > MAX_PARTIAL_BYTES:
            cut = len(self._partial)
        if cut:
            self._queue.put_nowait(self._partial[:cut])
            self._partial = self._partial[cut:]

    def _end(self) -> None:
        if self._partial:  # the run ended without a last newline
            self._queue.put_nowait(self._partial)
            self._partial = b""
        self._queue.put_nowait(None)

    async def finish(self) -> None:
        """The job ended: the rest of its log in one call (Ray closes a tail seconds later)."""
        if self._finishing or self.drained.is_set():
            return
        self._finishing = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            text = await self.execution.executor.call("get_job_logs", self.execution.submission_id)

            async def whole() -> AsyncIterator[str]:
                yield str(text)

            async for offset, chunk in self._body(whole()):
                self._take(offset, chunk)
        except Exception:  # Ray unreachable: what the tail delivered is all there is
            pass
        finally:
            self._end()

    async def _body(self, chunks: AsyncIterator[str]) -> AsyncIterator[tuple[int, bytes]]:
        """(offset in the body, bytes) for each chunk of the CLI's output: everything up to our
        start line is Ray's, and Ray's ``Running entrypoint ...`` line, which Ray appends from
        another file handle and so can land after the CLI's first output, is cut out once."""
        start = self.execution.start_line.encode()
        header = self.execution.header_line.encode()
        buffer = b""
        started = header_cut = False
        offset = 0
        async for text in chunks:
            buffer += text.encode("utf-8", "surrogateescape")
            if not started:
                found = buffer.find(start)
                if found < 0:
                    if len(buffer) > MAX_HEADER_BYTES + len(header):
                        raise RuntimeError("Ray's log never started the CLI")
                    continue
                started, header_cut = True, header in buffer[:found]
                buffer = buffer[found + len(start) :]
            if not header_cut and (found := buffer.find(header)) >= 0:
                buffer, header_cut = buffer[:found] + buffer[found + len(header) :], True
            # Until Ray's line came, hold back what could be its beginning.
            keep = 0 if header_cut else min(len(buffer), len(header) - 1)
            data, buffer = buffer[: len(buffer) - keep], buffer[len(buffer) - keep :]
            if data:
                yield offset, data
                offset += len(data)
        if started and buffer:
            yield offset, buffer

    def detach(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._queue.put_nowait(_DETACHED)


class _StderrFile:
    """The job's stderr file, which the worker's shell writes: read until the run ended."""

    def __init__(self, execution: RayExecution, offset: int) -> None:
        self.execution = execution
        self.path = execution.job_dir / STREAM_FILES["stderr"]
        self.offset = offset

    async def read(self, n: int = -1) -> bytes:
        size = n if n > 0 else 1024 * 1024
        while True:
            if self.execution.detached:
                raise asyncio.CancelledError
            ended = self.execution.ended.is_set()  # before the read: all output is in by then
            try:
                with open(self.path, "rb") as handle:
                    chunk = os.pread(handle.fileno(), size, self.offset)
            except FileNotFoundError:
                chunk = b""
            if chunk:
                self.offset += len(chunk)
                return chunk
            if ended:
                return b""
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.execution.ended.wait(), FILE_POLL_SECONDS)


class RayExecution:
    """One Ray job, followed through its status and its log."""

    persists_output = True

    def __init__(
        self,
        executor: RayExecutor,
        *,
        job_dir: Path,
        submission_id: str,
        entrypoint: str,
        nonce: str,
        argv: list[str],
        offsets: Mapping[str, int] | None = None,
    ) -> None:
        self.executor = executor
        self.job_dir = job_dir
        self.submission_id = submission_id
        self.argv = argv
        self.ref = ExecutionRef(None, None, submission_id)
        self.header_line = f"Running entrypoint for job {submission_id}: {entrypoint}\n"
        self.start_line = start_line(nonce)
        self.ended = asyncio.Event()
        self.status: str | None = None
        self.detached = False
        offsets = offsets or {}
        self._stdout = _LogStream(self, offsets.get("stdout", 0))
        self._stderr = _StderrFile(self, offsets.get("stderr", 0))
        self._streams: dict[str, ByteStream] = {"stdout": self._stdout, "stderr": self._stderr}
        # Set by recovery like a detached run's; Ray has no exit record of ours to report.
        self.on_exit: Callable[[dict[str, Any]], None] | None = None
        self._poller: asyncio.Task[None] | None = None

    @property
    def streams(self) -> Mapping[str, ByteStream]:
        return self._streams

    def resume_from(self, offsets: Mapping[str, int]) -> None:
        """Where each stream continues (before it is first read): after what the runtime
        consumed; stdout bytes already in the file are delivered again, not written again."""
        if "stdout" in offsets:
            self._stdout.skip = self._stdout._delivered = offsets["stdout"]
        if "stderr" in offsets:
            self._stderr.offset = offsets["stderr"]

    def tail(self) -> AsyncIterator[str]:
        return self.executor.tail(self.submission_id)

    async def is_terminal(self) -> bool:
        try:
            return await self._poll_once() in TERMINAL
        except Exception:  # Ray unreachable: not known to have ended
            return False

    async def _poll_once(self) -> str:
        status = str(await self.executor.call("get_job_status", self.submission_id))
        self.status = status.rsplit(".", 1)[-1]  # JobStatus.SUCCEEDED -> SUCCEEDED
        return self.status

    async def _poll(self) -> None:
        """Until Ray says the job ended (or stays unreachable: then the end is unknown)."""
        failures = 0
        while failures < STATUS_FAILURES:
            try:
                if await self._poll_once() in TERMINAL:
                    break
                failures = 0
            except Exception:  # Ray's SDK raises RuntimeError and requests' errors
                failures += 1
                self.status = None
            await asyncio.sleep(STATUS_POLL_SECONDS)
        self.ended.set()

    async def wait(self) -> int | None:
        """The driver's exit code once Ray says the job ended and its log is drained."""
        self._stdout.start()
        if self._poller is None:
            self._poller = asyncio.ensure_future(self._poll())
        await asyncio.shield(self._poller)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stdout.finish(), LOG_DRAIN_SECONDS)
            await asyncio.wait_for(self._stdout.drained.wait(), LOG_DRAIN_SECONDS)
        info = None
        with contextlib.suppress(Exception):
            info = await self.executor.call("get_job_info", self.submission_id)
        code = getattr(info, "driver_exit_code", None)
        if isinstance(code, int):
            return code
        return -signal.SIGTERM if self.status == "STOPPED" else None

    async def stop(self, grace_seconds: float) -> None:
        """``stop_job``: Ray sends SIGTERM to the job's process tree, SIGKILL after its wait."""
        if self.ended.is_set():
            return
        with contextlib.suppress(Exception):
            await self.executor.call("stop_job", self.submission_id)

    def release(self) -> None:
        """The Ray job ended (Ray cleaned its tree); only our poller can be left."""
        if self._poller is not None and not self._poller.done():
            self._poller.cancel()
        self.executor.forget(self)

    def detach(self) -> None:
        """Let the Ray job go on without this runtime: readers and waiters stop."""
        self.detached = True
        self.release()
        self._stdout.detach()


class RayExecutor:
    """Runs each job as a Ray job on ``config.ray_address`` (see the module docstring)."""

    name = "ray"

    def __init__(self, config: RuntimeConfig) -> None:
        if not config.ray_address:
            raise InvalidInputError("ray_address", "is required with executor 'ray'")
        self.config = config
        self.address = config.ray_address
        self._client: Any = None
        self._live: set[RayExecution] = set()

    # -- Ray's client -----------------------------------------------------------------------
    def _headers(self) -> dict[str, str] | None:
        path = self.config.ray_auth_token_path
        if not path:
            return None
        token = Path(path).read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def _connect(self) -> Any:
        if self._client is None:
            reason = ray_unavailable_reason()
            if reason is not None:
                raise GatewayError(ErrorCategory.SPAWN_ERROR, reason)
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address, headers=self._headers())
        return self._client

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One blocking SDK call (HTTP through ``requests``), off the event loop."""

        def run() -> Any:
            return getattr(self._connect(), method)(*args, **kwargs)

        return await asyncio.to_thread(run)

    def tail(self, submission_id: str) -> AsyncIterator[str]:
        tail: AsyncIterator[str] = self._connect().tail_job_logs(submission_id)
        return tail

    # -- the executor contract ----------------------------------------------------------------
    async def launch(self, request: LaunchRequest) -> RayExecution:
        if request.isolated and not self.config.ray_isolation_ok:
            raise GatewayError(
                ErrorCategory.ISOLATION_ERROR,
                "this job needs the isolation boundary, which the Ray executor does not provide;"
                " the owner can set ray_isolation_ok when the cluster's workers isolate jobs",
            )
        job_dir = request.job_dir
        env_file = job_dir / ENV_FILE
        write_private(env_file, env_script(request.env).encode())
        prompt_file = None
        if request.stdin is not None:
            prompt_file = job_dir / PROMPT_FILE
            write_private(prompt_file, request.stdin)
        stderr_file = job_dir / STREAM_FILES["stderr"]
        write_private(stderr_file, b"")
        write_private(job_dir / STREAM_FILES["stdout"], b"")
        nonce = secrets.token_hex(8)
        entrypoint = entrypoint_for(
            request,
            nonce=nonce,
            env_file=env_file,
            prompt_file=prompt_file,
            stderr_file=stderr_file,
        )
        ray_info = {"submission_id": request.job_id, "entrypoint": entrypoint, "nonce": nonce}
        write_private(job_dir / RAY_FILE, json.dumps(ray_info).encode())
        runtime_env = dict(self.config.ray_runtime_env or {})
        try:
            await self.call(
                "submit_job",
                entrypoint=entrypoint,
                submission_id=request.job_id,
                runtime_env=runtime_env or None,
                metadata={"llmgw_job_id": request.job_id},
                entrypoint_num_cpus=0,
            )
        except GatewayError:
            raise
        except Exception as error:  # the SDK raises RuntimeError / requests' errors
            raise OSError(0, f"Ray did not take the job: {error}") from error
        execution = RayExecution(
            self,
            job_dir=job_dir,
            submission_id=request.job_id,
            entrypoint=entrypoint,
            nonce=nonce,
            argv=["ray-job", request.job_id, *request.argv],
        )
        self._live.add(execution)
        return execution

    def stop_orphan(self, ref: ExecutionRef) -> bool:
        """A local run of an earlier runtime (Ray jobs are followed again, never orphaned)."""
        return kill_group_of(ref.pid, ref.start_time)

    def reattach(self, ref: ExecutionRef, job_dir: Path) -> RayExecution | None:
        """Follow a Ray job again after a restart: its output continues after the job's files.
        None for a run of another executor (no ``ray.json``)."""
        try:
            info = json.loads((job_dir / RAY_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(info, dict) or not isinstance(info.get("submission_id"), str):
            return None
        try:  # a head that restarted lost its jobs (404): the job ends as interrupted
            self._connect().get_job_status(info["submission_id"])
        except Exception:
            return None
        offsets = {name: _size(job_dir / STREAM_FILES[name]) for name in STREAMS}
        execution = RayExecution(
            self,
            job_dir=job_dir,
            submission_id=info["submission_id"],
            entrypoint=str(info.get("entrypoint", "")),
            nonce=str(info.get("nonce", "")),
            argv=[],
            offsets=offsets,
        )
        self._live.add(execution)
        return execution

    def forget(self, execution: RayExecution) -> None:
        self._live.discard(execution)

    def detach_all(self) -> None:
        """The runtime stops and leaves its Ray jobs going: the next runtime follows them."""
        for execution in list(self._live):
            execution.detach()
        self._live.clear()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0

"""The local executor: each job's CLI is a child of the runtime, with pipes, in its own session.

Isolated jobs run inside the bubblewrap boundary (``isolation.py``). The pipes die with the
runtime, so a run cannot be followed again after a restart: recovery stops it instead.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path

from llmgw_jupyter.runtime.executor import ByteStream, ExecutionRef, LaunchRequest
from llmgw_jupyter.runtime.isolation import Boundary
from llmgw_jupyter.runtime.process import (
    CliProcess,
    kill_group_of,
    signal_group,
    spawn,
    terminate_group,
)


class LocalExecution:
    """A running child process group; the prompt was written to its stdin as it started."""

    persists_output = False

    def __init__(self, process: CliProcess) -> None:
        self.process = process
        self.argv = process.argv
        self.ref = ExecutionRef(process.pid, process.start_time)
        self.streams: Mapping[str, ByteStream] = {
            "stdout": process.stdout,
            "stderr": process.stderr,
        }

    async def wait(self) -> int | None:
        return await self.process.wait_exit()

    async def stop(self, grace_seconds: float) -> None:
        await terminate_group(self.process, grace_seconds)

    def release(self) -> None:
        signal_group(self.process.pid, signal.SIGKILL)  # leftovers must not outlive the job
        self.process.close_stdin()


class LocalExecutor:
    """Runs jobs as children of this process (see ``executor.py`` for the contract)."""

    name = "local"

    def __init__(self, boundary: Boundary) -> None:
        self.boundary = boundary

    async def launch(self, request: LaunchRequest) -> LocalExecution:
        def command() -> list[str]:
            if not request.isolated:
                return request.argv
            cwd = request.cwd or os.getcwd()
            return self.boundary.wrap(request.argv, cwd=cwd, mounts=request.mounts)

        process = await spawn(command, cwd=request.cwd, env=dict(request.env), stdin=request.stdin)
        return LocalExecution(process)

    def stop_orphan(self, ref: ExecutionRef) -> bool:
        return kill_group_of(ref.pid, ref.start_time)

    def reattach(self, ref: ExecutionRef, job_dir: Path) -> None:
        return None  # the run's pipes died with the runtime that started it

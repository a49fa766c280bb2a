"""Child processes in their own session, so a cancel reaches the whole process group.

Codex's npm launcher on Node 20 leaves the native binary as a child: signalling only the launcher
would orphan the real worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import psutil


class _ExitProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Resolves ``exited`` when the leader exits, whoever still holds its pipes."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


class CliProcess(asyncio.subprocess.Process):
    """A job's group leader, with a wait that ends when the leader exits.

    On Python < 3.12 ``Process.wait()`` also waits until every pipe is closed, so a grandchild
    that inherited stdout would keep a finished CLI "running" (and a cancel waiting out the
    whole grace period) until the grandchild ends on its own.
    """

    exited: asyncio.Future[None]

    async def wait_exit(self) -> int:
        await asyncio.shield(self.exited)
        code = self.returncode
        assert code is not None
        return code


async def spawn(
    argv: list[str], *, cwd: str | None, env: dict[str, str], stdin: bool
) -> CliProcess:
    loop = asyncio.get_running_loop()
    protocol = _ExitProtocol(2**16, loop)
    transport, _ = await loop.subprocess_exec(
        lambda: protocol,
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    process = CliProcess(transport, protocol, loop)
    process.exited = protocol.exited
    return process


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


async def terminate_group(process: CliProcess, grace_seconds: float) -> None:
    """SIGTERM the group, then SIGKILL it if the leader is still there after the grace period."""
    pgid = process.pid
    signal_group(pgid, signal.SIGTERM)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(process.wait_exit(), grace_seconds)
    signal_group(pgid, signal.SIGKILL)

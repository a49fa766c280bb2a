"""How a job runs: the one seam between the runtime and whatever executes a CLI.

The runtime decides whether and when a job runs (``scheduler.py``), what its output means and how
it ended (``supervisor.py``, ``outcome.py``) and keeps every record (``store/``). An executor only
makes a prepared command run somewhere and hands its bytes back. A new executor (a detached
supervisor process, a Ray job) is one module implementing ``Executor`` and ``Execution``; nothing
in the scheduler, the supervisor or the store changes.

An executor must:

1. ``launch(request)``: run ``request.argv`` (built and validated by the provider, never through a
   shell) in ``request.cwd`` with exactly ``request.env`` (an allow list: add nothing of the
   server's own environment), deliver ``request.stdin`` and then close the CLI's stdin (an open
   stdin makes ``codex exec`` wait forever). When ``request.isolated``, the command runs inside
   the isolation boundary or not at all. The CLI gets its own process group (or the executor's
   equivalent), so a stop reaches its children too. Raise ``GatewayError`` to refuse (the job fails
   with that category, e.g. isolation unavailable) or ``OSError`` when the command cannot be
   started (``spawn_error``); nothing may be left running when ``launch`` raises.
2. ``Execution.streams``: one ``ByteStream`` per stream name in ``STREAMS``; ``read(n)`` returns the
   next at most ``n`` bytes in order, ``b""`` once the stream has ended. No byte is lost or
   repeated. When ``persists_output`` is True the executor has already written those bytes to the
   job's output files (``runtime/output.py`` names them) and the runtime only counts and parses
   them; otherwise the runtime writes them.
3. ``Execution.wait()``: the CLI's exit code once its leader has exited (``None`` when it cannot
   be known), even while a grandchild still holds its output open.
4. ``Execution.stop(grace_seconds)``: ask the whole group to stop (SIGTERM), and kill it (SIGKILL)
   if it is still there after the grace period. Safe to call more than once.
5. ``Execution.release()``: after the exit, kill what is left of the group (a grandchild must not
   outlive its job) and free what the execution holds. Called exactly once.
6. ``Execution.ref``: a durable identity of the run (pid and start time; an external id for a
   remote executor), stored with the job so that a runtime started later can find the run again.
7. ``stop_orphan(ref)``: at start-up, for a job left running by a runtime that is gone: stop the
   run if it is still the same one (never a process that merely reuses the pid); True if it was
   alive. Before that, ``reattach(ref, job_dir)`` is asked for an ``Execution`` that follows such
   a run again (its streams continue after the output already in ``job_dir``; events continue
   from the job's last sequence number) or None when this executor cannot (the local executor's
   pipes died with the old runtime: its jobs end as ``interrupted``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from llmgw_jupyter.providers.base import Mounts

STREAMS = ("stdout", "stderr")


@dataclass(frozen=True)
class ExecutionRef:
    """Where a run can be found again: stored with the job (``pid``, ``pid_start_time``)."""

    pid: int | None
    start_time: float | None  # tells the same process from one that reuses the pid
    external_id: str | None = None  # a remote executor's id for the run (e.g. a Ray job id)


@dataclass(frozen=True)
class LaunchRequest:
    """One job's prepared command: everything an executor needs, nothing it must decide."""

    job_id: str
    job_dir: Path  # the job's private directory; its output files live here
    argv: list[str]
    cwd: str | None
    env: Mapping[str, str]
    stdin: bytes | None
    isolated: bool  # True: run inside the isolation boundary, or refuse
    mounts: Mounts  # what the CLI needs visible inside the boundary


class ByteStream(Protocol):
    """One output stream of a run (``asyncio.StreamReader`` is one)."""

    async def read(self, n: int = -1) -> bytes: ...


class Execution(Protocol):
    """One launched run, as the runtime's supervisor sees it."""

    @property
    def argv(self) -> list[str]:
        """The command line actually started (with the boundary's wrapper): kept with the job."""
        ...

    @property
    def ref(self) -> ExecutionRef: ...

    @property
    def streams(self) -> Mapping[str, ByteStream]: ...

    @property
    def persists_output(self) -> bool: ...

    async def wait(self) -> int | None: ...

    async def stop(self, grace_seconds: float) -> None: ...

    def release(self) -> None: ...


class Executor(Protocol):
    """Runs jobs' commands somewhere (see the module docstring for the whole contract)."""

    name: str

    async def launch(self, request: LaunchRequest) -> Execution: ...

    def stop_orphan(self, ref: ExecutionRef) -> bool: ...

    def reattach(self, ref: ExecutionRef, job_dir: Path) -> Execution | None: ...

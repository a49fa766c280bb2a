"""Revocation: a revoked grant's work stops, here or when another process revoked it.

A grant's revocation (here or by ``llmgw grant revoke`` in another process) cancels its jobs,
denies its approvals, tells the listeners (the MCP layer closes its sessions) and withholds the
result of its in-flight calls. Revocations elsewhere are found by a watcher that wakes every
``check_seconds`` (one count on the grants table when nothing changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from llmgw_jupyter.errors import ErrorCategory
from llmgw_jupyter.gateway.approvals import GRANT_REVOKED_CANCEL_REASON, ApprovalBroker
from llmgw_jupyter.gateway.audit import CallAudit, shown_tool
from llmgw_jupyter.gateway.grant_policies import GrantPolicies
from llmgw_jupyter.gateway.result import ToolResult
from llmgw_jupyter.records import ACTIVE_STATUSES
from llmgw_jupyter.runtime.manager import Runtime
from llmgw_jupyter.store.grants import GrantStore
from llmgw_jupyter.tools.context import Caller

log = logging.getLogger(__name__)

REVOCATION_CHECK_SECONDS = 2.0
_LIVE_STATUSES = [status.value for status in ACTIVE_STATUSES]

RevocationListener = Callable[[str], "Awaitable[None] | None"]


class _InFlight:
    """One guarded call: the task it runs in, and whether a revocation stopped it."""

    __slots__ = ("cancelled", "done", "revoked", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.revoked = False  # its result is withheld
        self.cancelled = False  # its task was cancelled for it (a cancellation to take back)
        self.done = False

    def stop(self) -> None:
        if self.revoked or self.done:
            return
        self.revoked = True
        if self.task is not asyncio.current_task():  # never cancel the revoking code itself
            self.cancelled = True
            self.task.cancel()


def _uncancel(task: asyncio.Task[Any]) -> int:
    """Take back a handled cancellation; the cancellations still requested (Python 3.11+
    counts them per task; 3.10 does not, and has nothing to take back)."""
    uncancel = getattr(task, "uncancel", None)
    return int(uncancel()) if uncancel is not None else 0


class Revocations:
    """Guards grants' in-flight calls and stops the work of revoked grants."""

    def __init__(
        self,
        store: GrantStore,
        policies: GrantPolicies,
        approvals: ApprovalBroker,
        runtime: Runtime,
        audit: CallAudit,
        *,
        check_seconds: float = REVOCATION_CHECK_SECONDS,
        on_tick: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.policies = policies
        self.approvals = approvals
        self.runtime = runtime
        self.audit = audit
        self.check_seconds = check_seconds
        self._on_tick = on_tick
        # A wake-up for the watcher, the grants already dealt with, the in-flight calls of
        # each grant and who wants to know.
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._seen: set[str] = set()
        self._in_flight: dict[str, set[_InFlight]] = {}
        self._listeners: list[RevocationListener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ----------------------------------------------------------------------------
    def start_tasks(self) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch()))

    def cancel_tasks(self) -> list[asyncio.Task[Any]]:
        """Cancel the watcher and pending sweeps; returns them for the caller to await."""
        tasks: list[asyncio.Task[Any]] = [*self._tasks, *self._side_tasks]
        self._tasks.clear()
        self._side_tasks.clear()
        for task in tasks:
            task.cancel()
        return tasks

    # -- listeners ----------------------------------------------------------------------------
    def add_listener(self, callback: RevocationListener) -> None:
        self._listeners.append(callback)

    def remove_listener(self, callback: RevocationListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    # -- in-flight calls ----------------------------------------------------------------------
    async def guard(
        self, caller: Caller, tool_name: str, work: Coroutine[Any, Any, ToolResult]
    ) -> ToolResult:
        """Run a grant's call; if the grant is revoked before it returns, the work stops and
        the caller gets a ``grant_revoked`` error, not the result.

        The work runs in the caller's own task (no task or event of its own: a quick call
        costs no extra loop steps); a revocation cancels that task, and this method tells its
        cancellation from any other by the slot it marked."""
        task = asyncio.current_task()
        assert task is not None, "guard runs in a task"
        slot = _InFlight(task)
        watchers = self._in_flight.setdefault(caller.name, set())
        watchers.add(slot)
        result: ToolResult | None = None
        try:
            result = await work
        except asyncio.CancelledError:
            # The caller gave up (its call goes with it and cleans up first, e.g. a pending
            # approval is withdrawn), or the revocation stopped it: only the latter is ours.
            if not slot.cancelled:
                raise
            slot.cancelled = False
            if _uncancel(task) > 0:  # somebody else cancelled it too
                raise
        finally:
            slot.done = True
            watchers.discard(slot)
            if not watchers:
                self._in_flight.pop(caller.name, None)
        if slot.cancelled:  # the work caught the revocation's cancellation and returned
            _uncancel(task)
        if (
            result is not None
            and not slot.revoked
            and self.policies.is_active(caller.name, fresh=True)
        ):
            return result
        # The call may have started a job after the revocation's sweep: stop it as well.
        await self._cancel_grant_jobs(caller.name)
        self._wake.set()  # revoked by another process: let the watcher do the rest
        message = f"grant {caller.name!r} was revoked while this call ran; its result is withheld"
        self.audit.record(caller, shown_tool(tool_name), "grant_revoked", "", message, {})
        return ToolResult.failure(ErrorCategory.GRANT_REVOKED.value, message)

    def _stop_in_flight(self, name: str) -> None:
        for slot in list(self._in_flight.get(name, ())):
            slot.stop()

    # -- revoking -----------------------------------------------------------------------------
    def revoked_here(self, name: str) -> asyncio.Task[list[str]] | None:
        """This process revoked ``name``: stop its in-flight calls at once and sweep the rest in
        the returned task (None outside the event loop: the watcher finds it)."""
        self.policies.forget_policy(name)
        self._stop_in_flight(name)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None  # the watcher finds it within check_seconds
        task = loop.create_task(self.enforce())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
        return task

    async def enforce(self, *, notify: bool = True) -> list[str]:
        """Deal with every grant revoked since the last look (in this process or another one);
        returns their names. Cheap when nothing changed: one count on the grants table."""
        async with self._lock:
            if self.store.count_revoked_grants() == len(self._seen):
                return []
            fresh = [n for n in self.store.revoked_grant_names() if n not in self._seen]
            for name in fresh:
                try:
                    await self._stop_grant(name, notify=notify)
                except Exception:
                    log.exception("could not stop the work of revoked grant %s", name)
                self._seen.add(name)
            return fresh

    async def _stop_grant(self, name: str, *, notify: bool) -> None:
        self.policies.forget_policy(name)
        self._stop_in_flight(name)
        denied = await self.approvals.deny_pending_of(
            Caller.grant(name), "grant revoked", GRANT_REVOKED_CANCEL_REASON
        )
        cancelled = await self._cancel_grant_jobs(name)
        if denied or cancelled:
            log.info(
                "grant %s revoked: %d approvals denied, %d jobs cancelled", name, denied, cancelled
            )
        if notify:
            for callback in list(self._listeners):
                try:
                    result = callback(name)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("a revocation listener failed for grant %s", name)

    async def _cancel_grant_jobs(self, name: str) -> int:
        """Cancel every awaiting, queued and running job of a grant (reason ``grant_revoked``);
        running ones are stopped together. Returns how many were cancelled."""
        key = Caller.grant(name).key
        done: set[str] = set()
        while True:
            jobs, _ = self.runtime.list_jobs(caller=key, status=_LIVE_STATUSES, limit=500)
            todo = [job.id for job in jobs if job.id not in done]
            if not todo:
                return len(done)
            done.update(todo)
            results = await asyncio.gather(
                *(self.runtime.cancel(job_id, GRANT_REVOKED_CANCEL_REASON) for job_id in todo),
                return_exceptions=True,
            )
            for job_id, result in zip(todo, results, strict=True):
                if isinstance(result, BaseException):
                    log.error(
                        "could not cancel job %s of revoked grant %s: %r", job_id, name, result
                    )

    async def _watch(self) -> None:
        """Wakes on a revocation here or after ``check_seconds`` (another process may have
        revoked one); also runs ``on_tick`` (the audit closes its finished runs of refusals)."""
        while True:
            self._wake.clear()
            try:
                await self.enforce()
                self._on_tick()
            except Exception:
                log.exception("revocation check failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.check_seconds)

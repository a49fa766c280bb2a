"""The approval broker: a call the policy holds for the owner waits here until decided.

A job-starting tool's job is created held (``awaiting_approval``) and released or cancelled by
the decision; a synchronous tool's caller waits for it. Requests expire at their deadline (one
task sleeps until exactly the next expiry) and a held job that ends undecided closes its request
(a second task follows the runtime's changes). Approvals are decided by the owner only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from llmgw_jupyter.errors import ErrorCategory, GatewayError, NotFoundError
from llmgw_jupyter.gateway.audit import CallAudit
from llmgw_jupyter.gateway.result import ToolResult
from llmgw_jupyter.policy import Decision
from llmgw_jupyter.records import TERMINAL_STATUSES
from llmgw_jupyter.runtime.manager import Runtime
from llmgw_jupyter.store.approvals import ApprovalRecord, ApprovalStore
from llmgw_jupyter.tools.context import Caller

log = logging.getLogger(__name__)

DEFAULT_APPROVAL_TIMEOUT = 600.0
GRANT_REVOKED_CANCEL_REASON = "grant_revoked"
_TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)


class ApprovalBroker:
    """Creates approval requests, decides them, expires them and acts on each decision."""

    def __init__(
        self,
        store: ApprovalStore,
        runtime: Runtime,
        audit: CallAudit,
        *,
        release_reservation: Callable[[Iterable[int]], object],
        grant_active: Callable[[str], bool],
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.audit = audit
        self._release_reservation = release_reservation
        self._grant_active = grant_active
        self.clock = clock
        self._waiters: dict[str, asyncio.Future[str]] = {}
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ----------------------------------------------------------------------------
    async def close_orphans(self) -> None:
        """A synchronous caller that waited is gone after a restart: deny its request."""
        for approval in self.store.list_approvals("pending", limit=10_000):
            if approval.job_id is None:
                await self.decide(
                    approval.id,
                    False,
                    decided_by="system",
                    reason="the gateway restarted while the caller waited",
                )

    def start_tasks(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._expire_approvals()))
        self._tasks.append(loop.create_task(self._close_approvals_of_ended_jobs()))

    def cancel_tasks(self) -> list[asyncio.Task[None]]:
        """Cancel the background tasks; returns them for the caller to await."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        return tasks

    # -- requests -----------------------------------------------------------------------------
    def open(
        self,
        caller: Caller,
        tool: str,
        args: dict[str, Any],
        timeout: float,
        decision: Decision,
        job_id: str | None,
    ) -> ApprovalRecord:
        """A pending request holding the decision's rate-limit reservation."""
        record = self.store.create_approval(
            caller.key,
            tool,
            args,
            timeout,
            job_id=job_id,
            reservation=decision.reservation,
            now=self.clock(),
        )
        self._changed.set()
        return record

    async def wait_for_owner(
        self, caller: Caller, tool: str, args: dict[str, Any], timeout: float, decision: Decision
    ) -> ToolResult | None:
        """A synchronous tool waits for the owner; None means approved."""
        record = self.open(caller, tool, args, timeout, decision, None)
        self.audit.record(
            caller, tool, "approval_pending", decision.rule, decision.reason, args, record.id
        )
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters[record.id] = waiter
        try:
            status = await asyncio.wait_for(asyncio.shield(waiter), timeout + 5)
        except asyncio.TimeoutError:
            status = "expired"
        except asyncio.CancelledError:
            await self.decide(
                record.id, False, decided_by="system", reason="the caller stopped waiting"
            )
            raise
        finally:
            self._waiters.pop(record.id, None)
        if status == "approved":
            return None
        denial = Decision("deny", f"approval {status} ({record.id})", decision.rule)
        return ToolResult.denied(denial, f"approval_{status}")

    def approvals(self, status: str | None = "pending", limit: int = 100) -> list[ApprovalRecord]:
        return self.store.list_approvals(status, limit=limit)

    # -- decisions ----------------------------------------------------------------------------
    async def decide(
        self,
        approval_id: str,
        approve: bool,
        *,
        decided_by: str = "owner",
        reason: str | None = None,
    ) -> ApprovalRecord:
        """Approve or deny a pending request (owner only: no tool exposes this).

        A request of a revoked grant is never approved: it is denied (if still pending), its
        job stays cancelled, and approving it raises a ``conflict`` error that says why.
        """
        if approve:
            existing = self.store.get_approval(approval_id)
            if existing is None:
                raise NotFoundError(f"approval {approval_id}")
            requester = Caller.from_key(existing.caller)
            if not requester.is_owner and not self._grant_active(requester.name):
                await self.settle(
                    approval_id,
                    False,
                    "system",
                    "grant revoked",
                    cancel_reason=GRANT_REVOKED_CANCEL_REASON,
                )
                raise GatewayError(
                    ErrorCategory.CONFLICT,
                    f"approval {approval_id} cannot be approved: grant {requester.name!r} is "
                    "revoked (its request is denied and its job cancelled)",
                    field="approval_id",
                )
        return await self.settle(approval_id, approve, decided_by, reason)

    async def settle(
        self,
        approval_id: str,
        approve: bool,
        decided_by: str,
        reason: str | None,
        *,
        cancel_reason: str | None = None,
    ) -> ApprovalRecord:
        """Record a decision without the owner-only checks, and carry it out if it changed."""
        result = self.store.decide_approval(approval_id, approve, decided_by, reason, self.clock())
        if result is None:
            raise NotFoundError(f"approval {approval_id}")
        record, changed = result
        if changed or record.status == "expired":
            await self._carry_out_decision(record, cancel_reason)
        return record

    async def deny_pending_of(self, caller: Caller, reason: str, cancel_reason: str) -> int:
        """Deny every pending request of a caller (its grant was revoked); returns how many."""
        denied = 0
        for approval in self.store.list_approvals("pending", caller=caller.key, limit=10_000):
            await self.settle(approval.id, False, "system", reason, cancel_reason=cancel_reason)
            denied += 1
        return denied

    async def _carry_out_decision(
        self, record: ApprovalRecord, cancel_reason: str | None = None
    ) -> None:
        """Release the held job (approved), or give the rate-limit reservation back and cancel
        the job (denied or expired); wake a waiting caller; audit the decision."""
        if record.status == "approved":
            if record.job_id:
                await self.runtime.release(record.job_id)
        else:
            self._release_reservation(record.reservation)
            if record.job_id:
                await self.runtime.cancel(
                    record.job_id, cancel_reason or f"approval_{record.status}"
                )
        waiter = self._waiters.get(record.id)
        if waiter is not None and not waiter.done():
            waiter.set_result(record.status)
        self.audit.record(
            Caller.from_key(record.caller),
            record.tool,
            record.status,
            "",
            f"{record.status} by {record.decided_by or 'expiry'}"
            + (f": {record.reason}" if record.reason else ""),
            record.arguments,
            record.id,
        )

    # -- background tasks ---------------------------------------------------------------------
    async def _close_approvals_of_ended_jobs(self) -> None:
        """A held job that ends without a decision (its caller cancelled it) closes its request,
        so the owner is not asked about dead work and the rate-limit slot is given back."""
        subscription = self.runtime.subscribe()
        try:
            while True:
                change = await subscription.get()
                if change is None or change.status not in _TERMINAL:
                    continue
                for approval in self.store.pending_approvals_for_job(change.job_id):
                    try:
                        await self.decide(
                            approval.id,
                            False,
                            decided_by="system",
                            reason=f"the job ended ({change.status}) before a decision",
                        )
                    except Exception:
                        log.exception("could not close approval %s", approval.id)
        finally:
            subscription.close()

    async def _expire_approvals(self) -> None:
        """Sleeps until exactly the next expiry (or a new approval), never polls."""
        while True:
            self._changed.clear()
            for record in self.store.expire_approvals(self.clock()):
                try:
                    await self._carry_out_decision(record)
                except Exception:
                    log.exception("could not carry out the expiry of approval %s", record.id)
            next_expiry = self.store.next_approval_expiry()
            timeout = None if next_expiry is None else max(0.0, next_expiry - self.clock())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

"""The one chokepoint: every tool call from every caller passes ``Gateway.call``.

validate arguments -> policy decision -> approval if required -> handler -> audit record.
Nothing reaches a handler another way. Approvals are decided by the owner only.

Every call counts toward the caller's ``all_tools`` limits, failed ones too (unknown tool, invalid
arguments, refusals, handler errors), and repeated refusals are audited once per window with a
count, so no caller can make unbounded calls or audit rows. A grant's revocation (here or by
``llmgw grant revoke`` in another process) cancels its jobs, denies its approvals, tells the
listeners (the MCP layer closes its sessions) and withholds the result of its in-flight calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from llmgw_jupyter import grants
from llmgw_jupyter.errors import (
    ErrorCategory,
    GatewayError,
    NotFoundError,
    input_error_from_validation,
)
from llmgw_jupyter.policy import DENIAL_PREFIX, Decision, Policy, PolicyEngine, PolicySource
from llmgw_jupyter.policy.compiled import load_policy
from llmgw_jupyter.records import ACTIVE_STATUSES, TERMINAL_STATUSES
from llmgw_jupyter.runtime.manager import Runtime
from llmgw_jupyter.store.policy import ApprovalRecord, GrantRecord, PolicyStore
from llmgw_jupyter.tools.context import Caller, ProgressCallback, ToolContext
from llmgw_jupyter.tools.registry import ToolDefinition, ToolRegistry
from llmgw_jupyter.tools.schemas import MAX_ARGUMENT_DEPTH, MAX_ARGUMENT_NODES, MAX_INT

log = logging.getLogger(__name__)

DEFAULT_APPROVAL_TIMEOUT = 600.0
_TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
AUDIT_RETENTION_SECONDS = 90 * 86400.0
REVOCATION_CHECK_SECONDS = 2.0
REFUSAL_AUDIT_WINDOW_SECONDS = 60.0
GRANT_CACHE_SIZE = 1024
GRANT_REVOKED_CANCEL_REASON = "grant_revoked"
MAX_SHOWN_TOOL_NAME = 64
_LIVE_STATUSES = [status.value for status in ACTIVE_STATUSES]

RevocationListener = Callable[[str], "Awaitable[None] | None"]


@dataclass
class _RefusalRun:
    """Identical refusals within one window: the first is audited, the rest only counted."""

    tool: str
    started: float
    last: float
    repeats: int = 0


@dataclass
class ToolResult:
    """What every adapter renders: MCP (isError + structuredContent), REST (status + JSON)."""

    is_error: bool
    text: str
    structured: dict[str, Any]
    error: str | None = None  # category: policy_denied, rate_limited, invalid_input, ...

    @classmethod
    def success(cls, output: BaseModel) -> ToolResult:
        structured = output.model_dump(mode="json")
        return cls(False, json.dumps(structured, separators=(",", ":")), structured)

    @classmethod
    def failure(
        cls, category: str, message: str, *, field: str | None = None, **extra: Any
    ) -> ToolResult:
        structured = {"error": {"category": category, "message": message, "field": field}, **extra}
        return cls(True, f"{category}: {message}", structured, category)

    @classmethod
    def denied(cls, decision: Decision, category: str | None = None) -> ToolResult:
        kind = category or (
            "rate_limited" if decision.retry_after_seconds is not None else "policy_denied"
        )
        structured = {
            **decision.to_dict(),
            "error": {"category": kind, "message": decision.reason, "field": None},
        }
        return cls(True, decision.denial_text(), structured, kind)


class Gateway:
    def __init__(
        self,
        runtime: Runtime,
        *,
        owner_policy: PolicySource | None = None,
        grant_policy_dir: Path | str | None = None,
        audit_retention_seconds: float | None = AUDIT_RETENTION_SECONDS,
        clock: Callable[[], float] = time.time,
        revocation_check_seconds: float = REVOCATION_CHECK_SECONDS,
        refusal_audit_window_seconds: float = REFUSAL_AUDIT_WINDOW_SECONDS,
        tools: ToolRegistry | None = None,
    ) -> None:
        self.runtime = runtime
        # The tools of the providers this runtime runs, unless given.
        self.tools = tools or ToolRegistry.for_providers(runtime.providers)
        self.owner_policy = owner_policy or PolicySource(None)
        self.grant_policy_dir = Path(grant_policy_dir).expanduser() if grant_policy_dir else None
        self._grant_sources: dict[str, PolicySource] = {}
        self.audit_retention_seconds = audit_retention_seconds
        self.clock = clock
        self._store: PolicyStore | None = None
        self._engine: PolicyEngine | None = None
        self._grant_policies: dict[str, tuple[GrantRecord, str, Policy | None]] = {}
        self._grant_cache: dict[str, GrantRecord | None] = {}
        self._grant_stamp: tuple[int, int] | None = None
        self._approval_waiters: dict[str, asyncio.Future[str]] = {}
        self._approvals_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Revocation: a wake-up for the watcher, the grants already dealt with, the in-flight
        # calls of each grant (one event each) and who wants to know.
        self.revocation_check_seconds = revocation_check_seconds
        self._revocation_wake = asyncio.Event()
        self._revocation_lock = asyncio.Lock()
        self._revoked_seen: set[str] = set()
        self._in_flight: dict[str, set[asyncio.Event]] = {}
        self._revocation_listeners: list[RevocationListener] = []
        self._side_tasks: set[asyncio.Task[Any]] = set()
        # Audit of repeated refusals: (caller, tool or "" for unknown ones, decision, rule).
        self.refusal_audit_window_seconds = refusal_audit_window_seconds
        self._refusal_runs: dict[tuple[str, str, str, str], _RefusalRun] = {}

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def store(self) -> PolicyStore:
        if self._store is None:
            raise RuntimeError("Gateway.start() has not been awaited")
        return self._store

    @property
    def engine(self) -> PolicyEngine:
        if self._engine is None:
            raise RuntimeError("Gateway.start() has not been awaited")
        return self._engine

    async def start(self) -> None:
        """Needs a started runtime: the policy tables live in the same store."""
        self._store = PolicyStore(self.runtime.database)
        self._engine = PolicyEngine(self._store, clock=self.clock)
        now = self.clock()
        if self.audit_retention_seconds:
            self._store.prune_audit(now - self.audit_retention_seconds)
        for approval in self._store.list_approvals("pending", limit=10_000):
            if approval.job_id is None:  # a synchronous caller that waited is gone
                await self.decide_approval(
                    approval.id,
                    False,
                    decided_by="system",
                    reason="the gateway restarted while the caller waited",
                )
        await self.owner_policy.start()
        # Grants revoked while no server ran may have left work behind: stop it now (nobody is
        # connected yet, so listeners are not told).
        await self.enforce_revocations(notify=False)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._expire_approvals()))
        self._tasks.append(loop.create_task(self._close_approvals_of_ended_jobs()))
        self._tasks.append(loop.create_task(self._watch_revocations()))

    async def close(self) -> None:
        for task in [*self._tasks, *self._side_tasks]:
            task.cancel()
        for task in [*self._tasks, *self._side_tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._side_tasks.clear()
        if self._store is not None:
            self.flush_audit()
        await self.owner_policy.stop()

    # -- policies -------------------------------------------------------------------------
    def policy_for(self, caller: Caller) -> Policy | None:
        """The owner's policy file, or the grant's own policy; no policy refuses everything."""
        if caller.is_owner:
            return self.owner_policy.policy
        grant = self._grant(caller.name)
        if grant is None or not grant.active:
            return None
        from_file = self._grant_policy_file(caller.name)
        if from_file is not None:
            return from_file if isinstance(from_file, Policy) else None
        if grant.policy is None:
            return None
        cached = self._grant_policies.get(caller.name)
        if cached is not None and cached[0] is grant:  # the same cached record: same policy
            return cached[2]
        text = json.dumps(grant.policy, sort_keys=True)
        if cached is not None and cached[1] == text:  # re-read, unchanged: the same object
            self._grant_policies[caller.name] = (grant, text, cached[2])
            return cached[2]
        try:
            policy: Policy | None = load_policy(grant.policy, f"grant {caller.name}")
        except Exception:  # a stored policy that no longer validates fails closed
            log.exception("policy of grant %s does not validate; refusing its calls", caller.name)
            policy = None
        self._grant_policies[caller.name] = (grant, text, policy)
        return policy

    def _grant(self, name: str) -> GrantRecord | None:
        """The grant's record, cached: every call of a grant needs it two or three times.

        The cache is emptied on any grant write through this process's store (its
        ``grants_generation``) and when another process (the ``llmgw grant`` CLI) has committed
        to the store (SQLite's data_version)."""
        stamp = (self.store.db.data_version(), self.store.grants_generation)
        if stamp != self._grant_stamp:
            self._grant_stamp = stamp
            self._grant_cache.clear()
        if name in self._grant_cache:
            return self._grant_cache[name]
        grant = self.store.get_grant(name)
        if len(self._grant_cache) >= GRANT_CACHE_SIZE:
            self._grant_cache.clear()
        self._grant_cache[name] = grant
        return grant

    def _forget_grants(self) -> None:
        self._grant_cache.clear()

    def _grant_policy_file(self, name: str) -> Policy | bool | None:
        """``<grant_policy_dir>/<name>.json`` wins over the stored policy and is hot-reloaded.

        None: no such file (use the stored policy); False: the file never loaded (fail closed).
        A later bad edit keeps the last good policy in force, as for the owner's file.
        """
        if self.grant_policy_dir is None:
            return None
        source = self._grant_sources.get(name)
        if source is None:
            path = self.grant_policy_dir / f"{name}.json"
            if not path.exists():
                return None
            try:
                source = PolicySource(path)
            except Exception:
                log.exception("policy file of grant %s does not load; refusing its calls", name)
                return False
            self._grant_sources[name] = source
        source.check()
        return source.policy

    def list_tools(self, caller: Caller) -> list[ToolDefinition]:
        """The tools this caller may see: hidden and never-allowed tools are left out."""
        return [
            self.tools[name]
            for name in self.engine.visible_tools(self.policy_for(caller), self.tools.names)
        ]

    # -- the chokepoint ---------------------------------------------------------------------
    async def call(
        self,
        tool_name: str,
        arguments: Mapping[str, Any] | None,
        caller: Caller,
        progress: ProgressCallback | None = None,
    ) -> ToolResult:
        """One tool call. A grant's call runs guarded: if the grant is revoked before it
        returns, the work stops and the caller gets a ``grant_revoked`` error, not the result."""
        work = self._call(tool_name, arguments, caller, progress)
        if caller.is_owner or not self._grant_active(caller.name):
            return await work  # a revoked or unknown grant is refused by policy_for: no policy
        return await self._guarded(caller, tool_name, work)

    async def _guarded(
        self, caller: Caller, tool_name: str, work: Coroutine[Any, Any, ToolResult]
    ) -> ToolResult:
        revoked = asyncio.Event()
        watchers = self._in_flight.setdefault(caller.name, set())
        watchers.add(revoked)
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(revoked.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The caller gave up: its call goes with it and cleans up first (a pending
            # approval is withdrawn), as when unguarded.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise
        finally:
            stop.cancel()
            watchers.discard(revoked)
            if not watchers:
                self._in_flight.pop(caller.name, None)
        if task.done() and not revoked.is_set() and self._grant_active(caller.name):
            return task.result()
        if task.done():
            if not task.cancelled():
                task.exception()  # a withheld result: its error, if any, is not the caller's
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # The call may have started a job after the revocation's sweep: stop it as well.
        await self._cancel_grant_jobs(caller.name)
        self._revocation_wake.set()  # revoked by another process: let the watcher do the rest
        message = f"grant {caller.name!r} was revoked while this call ran; its result is withheld"
        self._audit(caller, _shown_tool(tool_name), "grant_revoked", "", message, {})
        return ToolResult.failure(ErrorCategory.GRANT_REVOKED.value, message)

    async def _call(
        self,
        tool_name: str,
        arguments: Mapping[str, Any] | None,
        caller: Caller,
        progress: ProgressCallback | None,
    ) -> ToolResult:
        tool = self.tools.get(tool_name)
        if tool is None:
            shown = _shown_tool(tool_name)
            limited = self.engine.charge(self.policy_for(caller), caller.key)
            if limited is not None:
                self._audit(caller, shown, "deny", limited.rule, limited.reason, {}, run_tool="")
                return ToolResult.denied(limited)
            self._audit(caller, shown, "unknown_tool", "", "unknown tool", {}, run_tool="")
            return ToolResult.failure("not_found", f"unknown tool {shown!r}", field="tool")
        raw = dict(arguments or {})
        invalid = _shape_problem(raw)
        audited_raw = raw if invalid is None else {}  # too deep or big to hash: keys unknown
        if invalid is None:
            try:
                parsed = tool.input_model.model_validate(raw)
            except ValidationError as error:
                invalid = input_error_from_validation(error)
            except (ValueError, TypeError, OverflowError, RecursionError) as error:
                invalid = GatewayError(
                    ErrorCategory.INVALID_INPUT,
                    f"arguments: cannot be validated ({type(error).__name__})",
                    field="arguments",
                )
        if invalid is not None:
            limited = self.engine.charge(self.policy_for(caller), caller.key)
            if limited is not None:
                self._audit(
                    caller, tool_name, "deny", limited.rule, limited.reason, audited_raw,
                    collapse=True,
                )  # fmt: skip
                return ToolResult.denied(limited)
            self._audit(
                caller, tool_name, "invalid", "", invalid.message, audited_raw, collapse=True
            )
            return ToolResult.failure("invalid_input", invalid.message, field=invalid.field)
        args = parsed.model_dump(mode="json", exclude_none=True)
        decision = self.engine.decide(self.policy_for(caller), tool_name, args, caller.key)
        if decision.denied:
            self._audit(
                caller, tool_name, "deny", decision.rule, decision.reason, args, collapse=True
            )
            return ToolResult.denied(decision)
        ctx = ToolContext(self.runtime, caller, progress, light_arg_keys=self.tools.light_arg_keys)
        approval: ApprovalRecord | None = None
        if decision.outcome == "require_approval":
            timeout = decision.approval_timeout_seconds or DEFAULT_APPROVAL_TIMEOUT
            if tool_name in self.tools.job_starting:
                ctx.needs_approval = True

                async def hold(job_id: str) -> dict[str, Any]:
                    nonlocal approval
                    approval = self._open_approval(
                        caller, tool_name, args, timeout, decision, job_id
                    )
                    return approval.to_dict()

                ctx.hold_for_approval = hold
            else:
                refused = await self._await_approval(caller, tool_name, args, timeout, decision)
                if refused is not None:
                    return refused
        try:
            output = await tool.handler(ctx, parsed)
        except GatewayError as error:
            self.engine.release(decision)  # the tool's own limits; all_tools keeps the call
            self._audit(
                caller, tool_name, "error", decision.rule, error.message, args, collapse=True
            )
            return ToolResult.failure(error.category.value, error.message, field=error.field)
        except OverflowError:  # a number the schema let through but SQLite or the OS cannot take
            self.engine.release(decision)
            field = _out_of_range_field(args)
            message = f"{field or 'arguments'}: a number is out of range (at most {MAX_INT})"
            self._audit(caller, tool_name, "invalid", decision.rule, message, args, collapse=True)
            return ToolResult.failure("invalid_input", message, field=field)
        except Exception as error:
            self.engine.release(decision)
            log.exception("tool %s failed", tool_name)
            self._audit(caller, tool_name, "error", decision.rule, repr(error), args, collapse=True)
            return ToolResult.failure("internal", f"internal error in {tool_name}: {error}")
        if approval is not None:
            self._audit(
                caller, tool_name, "approval_pending", decision.rule, decision.reason, args,
                approval.id,
            )  # fmt: skip
        elif tool.annotations.read_only:
            # Reads (status, watch, result, lists) are recorded once per window and caller,
            # then counted: an agent polling a job would otherwise write a row per poll.
            self._audit(
                caller, tool_name, "allow", decision.rule, decision.reason, args, collapse=True
            )
        else:
            self._audit(caller, tool_name, "allow", decision.rule, decision.reason, args)
        return ToolResult.success(output)

    # -- approvals --------------------------------------------------------------------------
    def _open_approval(
        self,
        caller: Caller,
        tool: str,
        args: dict[str, Any],
        timeout: float,
        decision: Decision,
        job_id: str | None,
    ) -> ApprovalRecord:
        record = self.store.create_approval(
            caller.key,
            tool,
            args,
            timeout,
            job_id=job_id,
            reservation=decision.reservation,
            now=self.clock(),
        )
        self._approvals_changed.set()
        return record

    async def _await_approval(
        self, caller: Caller, tool: str, args: dict[str, Any], timeout: float, decision: Decision
    ) -> ToolResult | None:
        """A synchronous tool waits for the owner; None means approved."""
        record = self._open_approval(caller, tool, args, timeout, decision, None)
        self._audit(
            caller, tool, "approval_pending", decision.rule, decision.reason, args, record.id
        )
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._approval_waiters[record.id] = waiter
        try:
            status = await asyncio.wait_for(asyncio.shield(waiter), timeout + 5)
        except asyncio.TimeoutError:
            status = "expired"
        except asyncio.CancelledError:
            await self.decide_approval(
                record.id, False, decided_by="system", reason="the caller stopped waiting"
            )
            raise
        finally:
            self._approval_waiters.pop(record.id, None)
        if status == "approved":
            return None
        denial = Decision("deny", f"approval {status} ({record.id})", decision.rule)
        return ToolResult.denied(denial, f"approval_{status}")

    async def decide_approval(
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
                await self._decide(
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
        return await self._decide(approval_id, approve, decided_by, reason)

    async def _decide(
        self,
        approval_id: str,
        approve: bool,
        decided_by: str,
        reason: str | None,
        *,
        cancel_reason: str | None = None,
    ) -> ApprovalRecord:
        result = self.store.decide_approval(approval_id, approve, decided_by, reason, self.clock())
        if result is None:
            raise NotFoundError(f"approval {approval_id}")
        record, changed = result
        if changed or record.status == "expired":
            await self._apply(record, cancel_reason)
        return record

    def approvals(self, status: str | None = "pending", limit: int = 100) -> list[ApprovalRecord]:
        return self.store.list_approvals(status, limit=limit)

    async def _apply(self, record: ApprovalRecord, cancel_reason: str | None = None) -> None:
        if record.status == "approved":
            if record.job_id:
                await self.runtime.release(record.job_id)
        else:
            self.engine.release(record.reservation)
            if record.job_id:
                await self.runtime.cancel(
                    record.job_id, cancel_reason or f"approval_{record.status}"
                )
        waiter = self._approval_waiters.get(record.id)
        if waiter is not None and not waiter.done():
            waiter.set_result(record.status)
        self._audit(
            Caller.from_key(record.caller),
            record.tool,
            record.status,
            "",
            f"{record.status} by {record.decided_by or 'expiry'}"
            + (f": {record.reason}" if record.reason else ""),
            record.arguments,
            record.id,
        )

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
                        await self.decide_approval(
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
            self._approvals_changed.clear()
            for record in self.store.expire_approvals(self.clock()):
                try:
                    await self._apply(record)
                except Exception:
                    log.exception("could not apply expiry of approval %s", record.id)
            next_expiry = self.store.next_approval_expiry()
            timeout = None if next_expiry is None else max(0.0, next_expiry - self.clock())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._approvals_changed.wait(), timeout)

    # -- grants -----------------------------------------------------------------------------
    def create_grant(self, name: str, policy: Mapping[str, Any] | None) -> tuple[GrantRecord, str]:
        self._forget_grants()
        try:
            return grants.create_grant(self.store, name, policy)
        finally:
            self._forget_grants()

    def revoke_grant(self, name: str) -> asyncio.Task[list[str]] | None:
        """Revoke a grant: its token stops working at once, its in-flight calls are stopped at
        once, and its jobs, approvals and listeners are dealt with by the returned task (await
        it to know that is done; None when called outside the gateway's event loop)."""
        self._forget_grants()
        try:
            grants.revoke_grant(self.store, name)
        finally:
            self._forget_grants()
        self._grant_policies.pop(name, None)
        self._stop_in_flight(name)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None  # the watcher finds it within revocation_check_seconds
        task = loop.create_task(self.enforce_revocations())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
        return task

    def add_tools_changed_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs after each reload of the owner's policy file, which may change
        the tools callers see (the MCP layer tells their sessions). A grant's policy is re-read
        when it is next used: adapters notice by ``policy_for(caller)`` no longer being the
        policy object they saw."""
        self.owner_policy.add_listener(lambda _source: callback())

    def add_revocation_listener(self, callback: RevocationListener) -> None:
        """``callback(grant_name)`` (sync or async) runs once per revoked grant, after its
        approvals are denied and its jobs cancelled; the MCP layer closes its sessions."""
        self._revocation_listeners.append(callback)

    def remove_revocation_listener(self, callback: RevocationListener) -> None:
        with contextlib.suppress(ValueError):
            self._revocation_listeners.remove(callback)

    async def enforce_revocations(self, *, notify: bool = True) -> list[str]:
        """Deal with every grant revoked since the last look (in this process or another one);
        returns their names. Cheap when nothing changed: one count on the grants table."""
        async with self._revocation_lock:
            if self.store.count_revoked_grants() == len(self._revoked_seen):
                return []
            fresh = [n for n in self.store.revoked_grant_names() if n not in self._revoked_seen]
            for name in fresh:
                try:
                    await self._stop_grant(name, notify=notify)
                except Exception:
                    log.exception("could not stop the work of revoked grant %s", name)
                self._revoked_seen.add(name)
            return fresh

    async def _stop_grant(self, name: str, *, notify: bool) -> None:
        self._grant_policies.pop(name, None)
        self._stop_in_flight(name)
        key = Caller.grant(name).key
        denied = 0
        for approval in self.store.list_approvals("pending", caller=key, limit=10_000):
            await self._decide(
                approval.id,
                False,
                "system",
                "grant revoked",
                cancel_reason=GRANT_REVOKED_CANCEL_REASON,
            )
            denied += 1
        cancelled = await self._cancel_grant_jobs(name)
        if denied or cancelled:
            log.info(
                "grant %s revoked: %d approvals denied, %d jobs cancelled", name, denied, cancelled
            )
        if notify:
            for callback in list(self._revocation_listeners):
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

    def _stop_in_flight(self, name: str) -> None:
        for event in self._in_flight.get(name, ()):
            event.set()

    def _grant_active(self, name: str) -> bool:
        grant = self._grant(name)
        return grant is not None and grant.active

    async def _watch_revocations(self) -> None:
        """Wakes on a revocation here or after ``revocation_check_seconds`` (another process
        may have revoked one); also closes the audit's finished runs of repeated refusals."""
        while True:
            self._revocation_wake.clear()
            try:
                await self.enforce_revocations()
                self._flush_refusal_runs(self.clock())
            except Exception:
                log.exception("revocation check failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._revocation_wake.wait(), self.revocation_check_seconds)

    def caller_for_token(self, token: str) -> Caller | None:
        grant = grants.grant_for_token(self.store, token)
        return Caller.grant(grant.name) if grant is not None else None

    # -- audit ------------------------------------------------------------------------------
    def _counted_in_run(
        self, caller: Caller, tool: str, run_tool: str, decision: str, rule: str
    ) -> bool:
        """Identical refusals (and successful reads) are audited once per window for the same
        caller, tool, decision and rule, then counted; True when this one was only counted.
        ``run_tool`` groups tools (unknown tool names are one group: their names vary)."""
        now = self.clock()
        key = (caller.key, run_tool, decision, rule)
        run = self._refusal_runs.get(key)
        if run is not None and now - run.started < self.refusal_audit_window_seconds:
            run.repeats += 1
            run.last = now
            return True
        if run is not None:
            self._write_refusal_run(key, run)
        self._refusal_runs[key] = _RefusalRun(tool=tool, started=now, last=now)
        return False

    def flush_audit(self) -> None:
        """Write the counts of every open run of repeated refusals now (close does it too)."""
        self._flush_refusal_runs(None)

    def _flush_refusal_runs(self, now: float | None) -> None:
        """Write the counts of the runs whose window ended (all of them when ``now`` is None)."""
        for key, run in list(self._refusal_runs.items()):
            if now is None or now - run.started >= self.refusal_audit_window_seconds:
                del self._refusal_runs[key]
                self._write_refusal_run(key, run)

    def _write_refusal_run(self, key: tuple[str, str, str, str], run: _RefusalRun) -> None:
        if not run.repeats:
            return
        caller, _, decision, rule = key
        until = datetime.fromtimestamp(run.last, tz=timezone.utc).isoformat(timespec="seconds")
        self.store.add_audit(
            caller,
            run.tool,
            decision,
            rule=rule,
            message=f"repeated {run.repeats} more times until {until} (identical refusals and "
            f"reads within {self.refusal_audit_window_seconds:g} s are recorded once, then "
            "counted)",
            args={},
            ts=run.last,
        )

    def _audit(
        self,
        caller: Caller,
        tool: str,
        decision: str,
        rule: str,
        message: str,
        args: Mapping[str, Any],
        approval_id: str | None = None,
        *,
        collapse: bool = False,
        run_tool: str | None = None,
    ) -> None:
        """One audit record; with ``collapse`` (or a ``run_tool`` group) repeats of the same
        outcome within the window are counted instead of written (``_counted_in_run``)."""
        if (collapse or run_tool is not None) and self._counted_in_run(
            caller, tool, tool if run_tool is None else run_tool, decision, rule
        ):
            return
        self.store.add_audit(
            caller.key,
            tool,
            decision,
            rule=rule,
            message=_without_values(message, args),
            args=args,
            approval_id=approval_id,
            ts=self.clock(),
        )


def _shown_tool(name: str) -> str:
    """An unknown tool name as audits and messages show it: bounded, printable."""
    text = "".join(ch if ch.isprintable() else "?" for ch in name[:MAX_SHOWN_TOOL_NAME])
    return text + ("..." if len(name) > MAX_SHOWN_TOOL_NAME else "")


def _shape_problem(arguments: Mapping[str, Any]) -> GatewayError | None:
    """Refuse argument objects nested deeper than ``MAX_ARGUMENT_DEPTH`` or with more than
    ``MAX_ARGUMENT_NODES`` values, without recursion, before anything else walks them."""
    stack: list[tuple[Any, int, str]] = [(arguments, 0, "")]
    nodes = 0
    while stack:
        value, depth, path = stack.pop()
        nodes += 1
        if nodes > MAX_ARGUMENT_NODES:
            return GatewayError(
                ErrorCategory.INVALID_INPUT,
                f"arguments: at most {MAX_ARGUMENT_NODES} values in all",
                field="arguments",
            )
        if depth > MAX_ARGUMENT_DEPTH:
            field = path.split(".")[0] or "arguments"
            return GatewayError(
                ErrorCategory.INVALID_INPUT,
                f"{field}: nested more than {MAX_ARGUMENT_DEPTH} levels deep",
                field=field,
            )
        if isinstance(value, Mapping):
            for key, item in value.items():
                stack.append((item, depth + 1, f"{path}.{key}" if path else str(key)))
        elif isinstance(value, (list, tuple)):
            for item in value:
                stack.append((item, depth + 1, path))
    return None


def _out_of_range_field(args: Mapping[str, Any]) -> str | None:
    """The first top-level argument holding an integer beyond ``MAX_INT``, to name it."""
    for key, value in args.items():
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_INT:
                return str(key)
            if isinstance(item, Mapping):
                stack.extend(item.values())
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
    return None


def _string_values(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _string_values(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _string_values(item)


def _without_values(message: str, args: Mapping[str, Any]) -> str:
    """The audit keeps argument keys and a hash, never values: error and denial messages may
    quote one (``job <id> not found``, ``<working_dir> is not a directory``), so mask them."""
    quoted = {v for v in _string_values(args) if v.strip() and v in message}
    for value in sorted(quoted, key=len, reverse=True):
        message = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", "<value>", message)
    return message


__all__ = ["DENIAL_PREFIX", "Gateway", "ToolResult"]

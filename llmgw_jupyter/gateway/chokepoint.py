"""The one chokepoint: every tool call from every caller passes ``Gateway.call``.

validate arguments -> policy decision -> approval if required -> handler -> audit record.
Nothing reaches a handler another way. Every call counts toward the caller's ``all_tools``
limits, failed ones too (unknown tool, invalid arguments, refusals, handler errors), and
repeated refusals are audited once per window with a count, so no caller can make unbounded
calls or audit rows.

The rest is delegated: whose policy applies (``grant_policies``), approvals (``approvals``),
revoked grants (``revocation``) and the audit trail (``audit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmgw_jupyter import grants
from llmgw_jupyter.errors import ErrorCategory, GatewayError, input_error_from_validation
from llmgw_jupyter.gateway.approvals import DEFAULT_APPROVAL_TIMEOUT, ApprovalBroker
from llmgw_jupyter.gateway.audit import (
    AUDIT_RETENTION_SECONDS,
    REFUSAL_AUDIT_WINDOW_SECONDS,
    CallAudit,
    shown_tool,
)
from llmgw_jupyter.gateway.budgets import BudgetLedger
from llmgw_jupyter.gateway.grant_policies import GrantPolicies, GrantsStamp
from llmgw_jupyter.gateway.result import ToolResult
from llmgw_jupyter.gateway.revocation import (
    REVOCATION_CHECK_SECONDS,
    RevocationListener,
    Revocations,
)
from llmgw_jupyter.policy import Policy, PolicyEngine, PolicySource
from llmgw_jupyter.runtime.manager import Runtime
from llmgw_jupyter.store.approvals import ApprovalRecord
from llmgw_jupyter.store.audit import AuditRecord
from llmgw_jupyter.store.grants import GrantRecord
from llmgw_jupyter.store.policy import PolicyStore
from llmgw_jupyter.tools.context import Caller, ProgressCallback, ToolContext
from llmgw_jupyter.tools.read_cache import ReadCache
from llmgw_jupyter.tools.registry import ToolDefinition, ToolRegistry
from llmgw_jupyter.tools.schemas import MAX_ARGUMENT_DEPTH, MAX_ARGUMENT_NODES, MAX_INT

log = logging.getLogger(__name__)


class _Parts:
    """What ``Gateway.start`` builds on the runtime's database: one store, the policy engine,
    and the parts the chokepoint delegates to, wired to each other."""

    def __init__(self, gateway: Gateway) -> None:
        self.store = PolicyStore(gateway.runtime.database)
        self.engine = PolicyEngine(self.store, clock=gateway.clock)
        self.audit = CallAudit(self.store, gateway.clock, gateway.refusal_audit_window_seconds)
        self.policies = GrantPolicies(self.store, gateway.owner_policy, gateway.grant_policy_dir)
        self.approvals = ApprovalBroker(
            self.store,
            gateway.runtime,
            self.audit,
            release_reservation=self.engine.release,
            grant_active=lambda name: self.policies.is_active(name, fresh=True),
            clock=gateway.clock,
        )
        self.budgets = BudgetLedger(gateway.runtime, self.store)
        self.reads = ReadCache(gateway.runtime.jobs_stamp)
        self.revocations = Revocations(
            self.store,
            self.policies,
            self.approvals,
            gateway.runtime,
            self.audit,
            check_seconds=gateway.revocation_check_seconds,
            on_tick=lambda: self.audit.flush_finished(gateway.clock()),
        )


class Gateway:
    """The chokepoint every tool call passes; ``start()`` it on a started runtime."""

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
        self.audit_retention_seconds = audit_retention_seconds
        self.clock = clock
        self.revocation_check_seconds = revocation_check_seconds
        self.refusal_audit_window_seconds = refusal_audit_window_seconds
        self._parts: _Parts | None = None
        self._revocation_listeners: list[RevocationListener] = []  # added before start

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def _started(self) -> _Parts:
        if self._parts is None:
            raise RuntimeError("Gateway.start() has not been awaited")
        return self._parts

    @property
    def store(self) -> PolicyStore:
        return self._started.store

    @property
    def engine(self) -> PolicyEngine:
        return self._started.engine

    async def start(self) -> None:
        """Needs a started runtime: the policy tables live in the same store."""
        parts = self._parts = _Parts(self)
        for callback in self._revocation_listeners:
            parts.revocations.add_listener(callback)
        self._revocation_listeners.clear()
        if self.audit_retention_seconds:
            parts.store.prune_audit(self.clock() - self.audit_retention_seconds)
        await parts.approvals.close_orphans()
        await self.owner_policy.start()
        # Grants revoked while no server ran may have left work behind: stop it now (nobody is
        # connected yet, so listeners are not told).
        await parts.revocations.enforce(notify=False)
        parts.approvals.start_tasks()
        parts.revocations.start_tasks()
        parts.budgets.start()

    async def close(self) -> None:
        parts = self._parts
        if parts is not None:
            tasks = [*parts.approvals.cancel_tasks(), *parts.revocations.cancel_tasks()]
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await parts.budgets.close()
            parts.audit.flush()
        await self.owner_policy.stop()

    # -- policies -------------------------------------------------------------------------
    def policy_for(self, caller: Caller) -> Policy | None:
        """The owner's policy file, or the grant's own policy; no policy refuses everything."""
        if caller.is_owner:  # also before start: the owner's file needs no store
            return self.owner_policy.policy
        return self._started.policies.policy_for(caller)

    def grants_version(self) -> GrantsStamp:
        """Changes whenever grants may have changed (a write here, or a commit by another
        process such as the ``llmgw grant`` CLI): one ``PRAGMA data_version``. The server's
        token cache uses it as its stamp; the call of the request it was checked for trusts
        that check, so each grant request asks SQLite once (``GrantPolicies``)."""
        return self._started.policies.check_for_changes()

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
        parts = self._started
        active_grant, policy = parts.policies.for_call(caller)
        work = self._call(parts, tool_name, arguments, caller, policy, progress)
        if not active_grant:
            return await work  # the owner; a revoked or unknown grant has no policy: refused
        return await parts.revocations.guard(caller, tool_name, work)

    async def _call(
        self,
        parts: _Parts,
        tool_name: str,
        arguments: Mapping[str, Any] | None,
        caller: Caller,
        policy: Policy | None,
        progress: ProgressCallback | None,
    ) -> ToolResult:
        engine, audit = parts.engine, parts.audit
        tool = self.tools.get(tool_name)
        if tool is None:
            shown = shown_tool(tool_name)
            limited = engine.charge(policy, caller.key)
            if limited is not None:
                audit.record(caller, shown, "deny", limited.rule, limited.reason, {}, run_tool="")
                return ToolResult.denied(limited)
            audit.record(caller, shown, "unknown_tool", "", "unknown tool", {}, run_tool="")
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
            limited = engine.charge(policy, caller.key)
            if limited is not None:
                audit.record(
                    caller, tool_name, "deny", limited.rule, limited.reason, audited_raw,
                    collapse=True,
                )  # fmt: skip
                return ToolResult.denied(limited)
            audit.record(
                caller, tool_name, "invalid", "", invalid.message, audited_raw, collapse=True
            )
            return ToolResult.failure("invalid_input", invalid.message, field=invalid.field)
        args = parsed.model_dump(mode="json", exclude_none=True)
        decision = engine.decide(policy, tool_name, args, caller.key, starts_job=tool.runs_agent)
        if decision.denied:
            audit.record(
                caller, tool_name, "deny", decision.rule, decision.reason, args, collapse=True
            )
            return ToolResult.denied(decision)
        ctx = ToolContext(
            self.runtime,
            caller,
            progress,
            light_arg_keys=self.tools.light_arg_keys,
            reads=parts.reads,
        )
        if decision.budgets:
            budgets = decision.budgets
            ctx.job_submitted = lambda job_id: parts.budgets.attach(job_id, budgets)
        approval: ApprovalRecord | None = None
        if decision.outcome == "require_approval":
            timeout = decision.approval_timeout_seconds or DEFAULT_APPROVAL_TIMEOUT
            if tool_name in self.tools.job_starting:
                ctx.needs_approval = True

                async def hold(job_id: str) -> dict[str, Any]:
                    nonlocal approval
                    approval = parts.approvals.open(
                        caller, tool_name, args, timeout, decision, job_id
                    )
                    return approval.to_dict()

                ctx.hold_for_approval = hold
            else:
                refused = await parts.approvals.wait_for_owner(
                    caller, tool_name, args, timeout, decision
                )
                if refused is not None:
                    return refused
        try:
            output = await tool.handler(ctx, parsed)
        except GatewayError as error:
            engine.release(decision)  # the tool's own limits; all_tools keeps the call
            audit.record(
                caller, tool_name, "error", decision.rule, error.message, args, collapse=True
            )
            return ToolResult.failure(error.category.value, error.message, field=error.field)
        except OverflowError:  # a number the schema let through but SQLite or the OS cannot take
            engine.release(decision)
            field = _out_of_range_field(args)
            message = f"{field or 'arguments'}: a number is out of range (at most {MAX_INT})"
            audit.record(caller, tool_name, "invalid", decision.rule, message, args, collapse=True)
            return ToolResult.failure("invalid_input", message, field=field)
        except Exception as error:
            engine.release(decision)
            log.exception("tool %s failed", tool_name)
            audit.record(
                caller, tool_name, "error", decision.rule, repr(error), args, collapse=True
            )
            return ToolResult.failure("internal", f"internal error in {tool_name}: {error}")
        if approval is not None:
            audit.record(
                caller, tool_name, "approval_pending", decision.rule, decision.reason, args,
                approval.id,
            )  # fmt: skip
        elif tool.annotations.read_only:
            # Reads (status, watch, result, lists) are recorded once per window and caller,
            # then counted: an agent polling a job would otherwise write a row per poll.
            audit.record(
                caller, tool_name, "allow", decision.rule, decision.reason, args, collapse=True
            )
        else:
            audit.record(caller, tool_name, "allow", decision.rule, decision.reason, args)
        return ToolResult.success(output)

    # -- approvals (owner only) -------------------------------------------------------------
    async def decide_approval(
        self,
        approval_id: str,
        approve: bool,
        *,
        decided_by: str = "owner",
        reason: str | None = None,
    ) -> ApprovalRecord:
        """Approve or deny a pending request; see ``ApprovalBroker.decide``."""
        return await self._started.approvals.decide(
            approval_id, approve, decided_by=decided_by, reason=reason
        )

    def approvals(self, status: str | None = "pending", limit: int = 100) -> list[ApprovalRecord]:
        return self._started.approvals.approvals(status, limit)

    def pending_approval_count(self) -> int:
        return self.store.count_approvals("pending")

    # -- what the owner reads about callers (the adapters never reach into the store) -------
    def grants(self) -> list[GrantRecord]:
        """Every grant, revoked ones included, oldest first."""
        return self.store.list_grants()

    def grant(self, name: str) -> GrantRecord | None:
        return self.store.get_grant(name)

    def audit(
        self,
        *,
        caller: str | None = None,
        tool: str | None = None,
        decision: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[AuditRecord]:
        """Audit records, newest first, filtered by exact caller, tool and decision."""
        return self.store.query_audit(
            caller=caller, tool=tool, decision=decision, limit=limit, offset=offset
        )

    # -- grants -----------------------------------------------------------------------------
    def create_grant(self, name: str, policy: Mapping[str, Any] | None) -> tuple[GrantRecord, str]:
        policies = self._started.policies
        policies.forget_records()
        try:
            return grants.create_grant(self.store, name, policy)
        finally:
            policies.forget_records()

    def revoke_grant(self, name: str) -> asyncio.Task[list[str]] | None:
        """Revoke a grant: its token stops working at once, its in-flight calls are stopped at
        once, and its jobs, approvals and listeners are dealt with by the returned task (await
        it to know that is done; None when called outside the gateway's event loop)."""
        parts = self._started
        parts.policies.forget_records()
        try:
            grants.revoke_grant(parts.store, name)
        finally:
            parts.policies.forget_records()
        return parts.revocations.revoked_here(name)

    def caller_for_token(self, token: str) -> Caller | None:
        grant = grants.grant_for_token(self.store, token)
        return Caller.grant(grant.name) if grant is not None else None

    async def enforce_revocations(self, *, notify: bool = True) -> list[str]:
        """Deal with every grant revoked since the last look (in this process or another one);
        returns their names. Cheap when nothing changed: one count on the grants table."""
        return await self._started.revocations.enforce(notify=notify)

    # -- listeners --------------------------------------------------------------------------
    def add_tools_changed_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs after each reload of the owner's policy file, which may change
        the tools callers see (the MCP layer tells their sessions). A grant's policy is re-read
        when it is next used: adapters notice by ``policy_for(caller)`` no longer being the
        policy object they saw."""
        self.owner_policy.add_listener(lambda _source: callback())

    def add_revocation_listener(self, callback: RevocationListener) -> None:
        """``callback(grant_name)`` (sync or async) runs once per revoked grant, after its
        approvals are denied and its jobs cancelled; the MCP layer closes its sessions."""
        if self._parts is None:
            self._revocation_listeners.append(callback)
        else:
            self._parts.revocations.add_listener(callback)

    def remove_revocation_listener(self, callback: RevocationListener) -> None:
        if callback in self._revocation_listeners:
            self._revocation_listeners.remove(callback)
        if self._parts is not None:
            self._parts.revocations.remove_listener(callback)

    # -- audit ------------------------------------------------------------------------------
    def flush_audit(self) -> None:
        """Write the counts of every open run of repeated refusals now (close does it too)."""
        self._started.audit.flush()


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

"""The one chokepoint: every tool call from every caller passes ``Gateway.call``.

validate arguments -> policy decision -> approval if required -> handler -> audit record.
Nothing reaches a handler another way. Approvals are decided by the owner only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from llmgw_jupyter import grants
from llmgw_jupyter.errors import GatewayError, NotFoundError, input_error_from_validation
from llmgw_jupyter.policy import DENIAL_PREFIX, Decision, Policy, PolicyEngine, PolicySource
from llmgw_jupyter.policy.compiled import load_policy
from llmgw_jupyter.runtime.manager import Runtime
from llmgw_jupyter.runtime.models import TERMINAL_STATUSES
from llmgw_jupyter.store.policy import ApprovalRecord, GrantRecord, PolicyStore
from llmgw_jupyter.tools.context import Caller, ProgressCallback, ToolContext
from llmgw_jupyter.tools.registry import JOB_STARTING_TOOLS, REGISTRY, TOOL_NAMES, ToolDefinition

log = logging.getLogger(__name__)

DEFAULT_APPROVAL_TIMEOUT = 600.0
_TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
AUDIT_RETENTION_SECONDS = 90 * 86400.0


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
    ) -> None:
        self.runtime = runtime
        self.owner_policy = owner_policy or PolicySource(None)
        self.grant_policy_dir = Path(grant_policy_dir).expanduser() if grant_policy_dir else None
        self._grant_sources: dict[str, PolicySource] = {}
        self.audit_retention_seconds = audit_retention_seconds
        self.clock = clock
        self._store: PolicyStore | None = None
        self._engine: PolicyEngine | None = None
        self._grant_policies: dict[str, tuple[str, Policy | None]] = {}
        self._approval_waiters: dict[str, asyncio.Future[str]] = {}
        self._approvals_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

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
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._expire_approvals()))
        self._tasks.append(loop.create_task(self._close_approvals_of_ended_jobs()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.owner_policy.stop()

    # -- policies -------------------------------------------------------------------------
    def policy_for(self, caller: Caller) -> Policy | None:
        """The owner's policy file, or the grant's own policy; no policy refuses everything."""
        if caller.is_owner:
            return self.owner_policy.policy
        grant = self.store.get_grant(caller.name)
        if grant is None or not grant.active:
            return None
        from_file = self._grant_policy_file(caller.name)
        if from_file is not None:
            return from_file if isinstance(from_file, Policy) else None
        if grant.policy is None:
            return None
        text = json.dumps(grant.policy, sort_keys=True)
        cached = self._grant_policies.get(caller.name)
        if cached is not None and cached[0] == text:
            return cached[1]
        try:
            policy: Policy | None = load_policy(grant.policy, f"grant {caller.name}")
        except Exception:  # a stored policy that no longer validates fails closed
            log.exception("policy of grant %s does not validate; refusing its calls", caller.name)
            policy = None
        self._grant_policies[caller.name] = (text, policy)
        return policy

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
            REGISTRY[name]
            for name in self.engine.visible_tools(self.policy_for(caller), TOOL_NAMES)
        ]

    # -- the chokepoint ---------------------------------------------------------------------
    async def call(
        self,
        tool_name: str,
        arguments: Mapping[str, Any] | None,
        caller: Caller,
        progress: ProgressCallback | None = None,
    ) -> ToolResult:
        tool = REGISTRY.get(tool_name)
        if tool is None:
            self._audit(caller, tool_name, "unknown_tool", "", "unknown tool", {})
            return ToolResult.failure("not_found", f"unknown tool {tool_name!r}", field="tool")
        raw = dict(arguments or {})
        try:
            parsed = tool.input_model.model_validate(raw)
        except ValidationError as error:
            invalid = input_error_from_validation(error)
            self._audit(caller, tool_name, "invalid", "", invalid.message, raw)
            return ToolResult.failure("invalid_input", invalid.message, field=invalid.field)
        args = parsed.model_dump(mode="json", exclude_none=True)
        decision = self.engine.decide(self.policy_for(caller), tool_name, args, caller.key)
        if decision.denied:
            self._audit(caller, tool_name, "deny", decision.rule, decision.reason, args)
            return ToolResult.denied(decision)
        ctx = ToolContext(self.runtime, caller, progress)
        approval: ApprovalRecord | None = None
        if decision.outcome == "require_approval":
            timeout = decision.approval_timeout_seconds or DEFAULT_APPROVAL_TIMEOUT
            if tool_name in JOB_STARTING_TOOLS:
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
            self.engine.release(decision)
            self._audit(caller, tool_name, "error", decision.rule, error.message, args)
            return ToolResult.failure(error.category.value, error.message, field=error.field)
        except Exception as error:
            self.engine.release(decision)
            log.exception("tool %s failed", tool_name)
            self._audit(caller, tool_name, "error", decision.rule, repr(error), args)
            return ToolResult.failure("internal", f"internal error in {tool_name}: {error}")
        outcome = "approval_pending" if approval is not None else "allow"
        approval_id = approval.id if approval is not None else None
        self._audit(caller, tool_name, outcome, decision.rule, decision.reason, args, approval_id)
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
        """Approve or deny a pending request (owner only: no tool exposes this)."""
        result = self.store.decide_approval(approval_id, approve, decided_by, reason, self.clock())
        if result is None:
            raise NotFoundError(f"approval {approval_id}")
        record, changed = result
        if changed or record.status == "expired":
            await self._apply(record)
        return record

    def approvals(self, status: str | None = "pending", limit: int = 100) -> list[ApprovalRecord]:
        return self.store.list_approvals(status, limit=limit)

    async def _apply(self, record: ApprovalRecord) -> None:
        if record.status == "approved":
            if record.job_id:
                await self.runtime.release(record.job_id)
        else:
            self.engine.release(record.reservation)
            if record.job_id:
                await self.runtime.cancel(record.job_id, f"approval_{record.status}")
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
        return grants.create_grant(self.store, name, policy)

    def revoke_grant(self, name: str) -> None:
        grants.revoke_grant(self.store, name)
        self._grant_policies.pop(name, None)

    def caller_for_token(self, token: str) -> Caller | None:
        grant = grants.grant_for_token(self.store, token)
        return Caller.grant(grant.name) if grant is not None else None

    # -- audit ------------------------------------------------------------------------------
    def _audit(
        self,
        caller: Caller,
        tool: str,
        decision: str,
        rule: str,
        message: str,
        args: Mapping[str, Any],
        approval_id: str | None = None,
    ) -> None:
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

"""The decision function: one policy, one tool call, one answer with the rule that gave it.

Order: hide -> action/default -> require -> deny_if -> arg_rules -> budgets (for calls that
start a job) -> limits (all_tools, then the tool's) -> approval. Only limits and budgets touch the
store; everything else is in-memory comparisons.

Budgets (``measure`` tokens or cost_usd) admit a job while what the caller's (or everyone's)
jobs used in the window is below ``max``; the decision carries the budgets so the gateway can
charge the job's usage to them while it runs and when it ends. They never refuse a call that
starts no job (reading a job's status costs nothing).

``all_tools`` limits count every call a caller makes, whatever becomes of it: calls the policy
refuses, calls to unknown tools and with invalid arguments (``charge``), calls that fail in the
tool. Only a call refused by a rate limit itself is not counted (so hammering a full limit does
not push its reopening back). A tool's own limits count the calls admitted to that tool, and give
the slot back when the call fails later (``release``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from llmgw_jupyter.policy.compiled import CompiledTool, Policy
from llmgw_jupyter.policy.conditions import MISSING, resolve
from llmgw_jupyter.policy.limits import CompiledLimit
from llmgw_jupyter.store.limits import BudgetCheck, LimitStore

Outcome = Literal["allow", "deny", "require_approval"]
DENIAL_PREFIX = "[POLICY DENIED]"
NO_POLICY_REASON = "no policy for this caller: every tool is refused"


@dataclass(frozen=True)
class Decision:
    """The answer for one call.

    ``reservation`` holds the tool-limit hits this call took; give them back with
    ``PolicyEngine.release`` when the call is refused later (approval denied, handler error...).
    Its ``all_tools`` hits are never given back.
    """

    outcome: Outcome
    reason: str
    rule: str
    retry_after_seconds: float | None = None
    approval_timeout_seconds: float | None = None
    reservation: tuple[int, ...] = field(default=(), repr=False)
    budgets: tuple[BudgetCheck, ...] = field(default=(), repr=False)  # to charge the job to

    @property
    def allowed(self) -> bool:
        return self.outcome == "allow"

    @property
    def denied(self) -> bool:
        return self.outcome == "deny"

    def denial_text(self) -> str:
        """``[POLICY DENIED] <reason> (rule: <pointer>)``, plus the retry delay for limits."""
        text = f"{DENIAL_PREFIX} {self.reason} (rule: {self.rule or '<no policy>'})"
        if self.retry_after_seconds is not None:
            text += f"; retry_after_seconds: {self.retry_after_seconds:.3f}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Structured content for callers (the reservation stays internal)."""
        data: dict[str, Any] = {"decision": self.outcome, "reason": self.reason, "rule": self.rule}
        if self.retry_after_seconds is not None:
            data["retry_after_seconds"] = round(self.retry_after_seconds, 3)
        if self.approval_timeout_seconds is not None:
            data["approval_timeout_seconds"] = self.approval_timeout_seconds
        return data


def _deny(reason: str, rule: str, retry_after: float | None = None) -> Decision:
    return Decision("deny", reason, rule, retry_after_seconds=retry_after)


class PolicyEngine:
    """Decides calls against a policy; rate-limit counters live in the ``LimitStore``."""

    def __init__(
        self,
        store: LimitStore,
        *,
        clock: Callable[[], float] = time.time,
        prune_interval: float = 60.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.prune_interval = prune_interval
        self._last_prune = clock()

    def decide(
        self,
        policy: Policy | None,
        tool: str,
        args: Mapping[str, Any],
        scope_key: str,
        *,
        starts_job: bool = False,
    ) -> Decision:
        """Decide one call; ``scope_key`` identifies the caller for ``grant``-scoped limits;
        ``starts_job`` says the call would start a job, so the budgets apply."""
        if policy is None:
            return _deny(NO_POLICY_REASON, "")
        refusal = self._refusal(policy, tool, args)
        if refusal is not None:
            # A refused call still counts toward all_tools; over them, say so instead.
            return self.charge(policy, scope_key) or refusal
        rule = policy.tools.get(tool)
        budgets: tuple[BudgetCheck, ...] = ()
        if starts_job:
            admitted = self._budgets(policy, rule, scope_key)
            if isinstance(admitted, Decision):
                return self.charge(policy, scope_key) or admitted
            budgets = admitted
        if rule is None:
            return self._limits(policy, None, tool, scope_key, "allow", "/default", budgets)
        return self._limits(
            policy, rule, tool, scope_key, rule.action, rule.action_pointer, budgets
        )

    def _budgets(
        self, policy: Policy, rule: CompiledTool | None, scope_key: str
    ) -> tuple[BudgetCheck, ...] | Decision:
        """The budgets a new job is charged to, or the refusal of the first one that is full."""
        budgets = policy.all_budgets + (rule.budgets if rule is not None else ())
        if not budgets:
            return ()
        checks = tuple(x.budget_for(scope_key) for x in budgets)
        room = self.store.budget_room(checks, self.clock)
        if room.admitted:
            return checks
        first = budgets[room.blocked]
        return _deny(
            f"budget exhausted: {first.describe()}; used {first.amount_text(room.used)} of "
            f"{first.amount_text(first.max)}",
            first.pointer,
            room.retry_after,
        )

    def charge(self, policy: Policy | None, scope_key: str) -> Decision | None:
        """Count a call that goes no further (refused, unknown tool, invalid arguments) toward
        the ``all_tools`` limits; the rate-limit denial when the caller is already over them."""
        if policy is None or not policy.all_limits:
            return None
        limits = policy.all_limits
        result = self.store.acquire([x.check_for(scope_key) for x in limits], self.clock)
        if not result.admitted:
            first = limits[result.blocked[0]]
            return _deny(
                f"rate limit exceeded: {first.describe()}", first.pointer, result.retry_after
            )
        return None

    @staticmethod
    def _refusal(policy: Policy, tool: str, args: Mapping[str, Any]) -> Decision | None:
        """hide, action/default, require, deny_if, arg_rules: the first refusal, or None."""
        hidden = policy.hide_all_pointer or policy.hidden.get(tool)
        if hidden is not None:
            return _deny(f"tool {tool} is hidden by the policy", hidden)
        rule = policy.tools.get(tool)
        if rule is None:
            if policy.default == "deny":
                return _deny(
                    f"tool {tool} is not allowed by the policy (default: deny)", "/default"
                )
            return None
        if rule.action == "deny":
            return _deny(rule.reason or f"tool {tool} is denied by the policy", rule.action_pointer)
        return _check_arguments(rule, args)

    def _limits(
        self,
        policy: Policy,
        rule: CompiledTool | None,
        tool: str,
        scope_key: str,
        action: str,
        pointer: str,
        budgets: tuple[BudgetCheck, ...] = (),
    ) -> Decision:
        limits: tuple[CompiledLimit, ...] = policy.all_limits
        if rule is not None and rule.limits:
            limits = limits + rule.limits
        reservation: tuple[int, ...] = ()
        if limits:
            result = self.store.acquire([x.check_for(scope_key) for x in limits], self.clock)
            if not result.admitted:
                first = limits[result.blocked[0]]
                return _deny(
                    f"rate limit exceeded: {first.describe()}", first.pointer, result.retry_after
                )
            # all_tools hits stay whatever happens to the call: only the tool's are given back.
            everyone = {x.check_for(scope_key).counter_key for x in policy.all_limits}
            reservation = tuple(
                hit
                for hit, key in zip(result.hit_ids, result.hit_keys, strict=True)
                if key not in everyone
            )
            if result.now - self._last_prune >= self.prune_interval:
                self._last_prune = result.now
                self.store.prune_hits(result.now)
        if action == "require_approval" and rule is not None:
            return Decision(
                "require_approval",
                f"tool {tool} needs the owner's approval",
                pointer,
                approval_timeout_seconds=rule.approval_timeout,
                reservation=reservation,
                budgets=budgets,
            )
        return Decision(
            "allow", f"allowed by {pointer}", pointer, reservation=reservation, budgets=budgets
        )

    def release(self, reservation: Decision | Iterable[int]) -> int:
        """Give a call's tool-limit hits back; safe to call twice (the second removes none)."""
        ids = reservation.reservation if isinstance(reservation, Decision) else reservation
        return self.store.release_hits(ids)

    def visible_tools(self, policy: Policy | None, tool_names: Iterable[str]) -> list[str]:
        """The tools a caller may see: neither hidden nor never allowed (order kept)."""
        if policy is None or policy.hide_all_pointer is not None:
            return []
        visible = []
        for name in tool_names:
            if name in policy.hidden:
                continue
            rule = policy.tools.get(name)
            if rule is None and policy.default == "deny":
                continue
            if rule is not None and rule.action == "deny":
                continue
            visible.append(name)
        return visible


def _check_arguments(rule: CompiledTool, args: Mapping[str, Any]) -> Decision | None:
    """require, deny_if, arg_rules in that order; the first refusal or None."""
    for required in rule.require:
        if resolve(args, required.segments) is MISSING:
            return _deny(f"missing required argument {required.path}", required.pointer)
    for condition in rule.deny_if:
        holds, problem = condition.evaluate(args)
        if problem is not None:
            return _deny(
                f"cannot evaluate {condition.describe()}: {condition.path} {problem}",
                condition.pointer,
            )
        if holds:
            return _deny(
                condition.reason or f"denied because {condition.describe()}", condition.pointer
            )
    for condition in rule.arg_rules:
        holds, problem = condition.evaluate(args)
        if problem is not None:
            return _deny(
                f"cannot evaluate {condition.describe()}: {condition.path} {problem}",
                condition.pointer,
            )
        if not holds:
            return _deny(
                condition.reason or f"argument rule not met: {condition.describe()}",
                condition.pointer,
            )
    return None

"""Limits as the engine sees them: a counter log key per scope plus window, max and measure.

A ``calls`` limit is a rate limit: each admitted call is one hit in its log. A budget (``tokens``
or ``cost_usd``) admits a job while what the jobs it admitted used in the window is below
``max``; the gateway charges each job's usage to it as the job reports it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from llmgw_jupyter.policy.model import Limit
from llmgw_jupyter.store.limits import BudgetCheck, LimitCheck


@dataclass(frozen=True, slots=True)
class CompiledLimit:
    """One ``limits`` entry; ``pointer`` names it in decisions."""

    pointer: str
    counter: str
    window: float
    max: float
    scope: str
    measure: str = "calls"

    @property
    def is_budget(self) -> bool:
        return self.measure != "calls"

    def check_for(self, scope_key: str) -> LimitCheck:
        """The store check for this caller: ``grant`` scope keeps one log per caller."""
        return LimitCheck(
            counter_key(self.counter, self.scope, scope_key), self.window, int(self.max)
        )

    def budget_for(self, scope_key: str) -> BudgetCheck:
        """The store check of a budget; its log is separate from any rate limit's."""
        owner = None if self.scope == "global" else scope_key
        key = json.dumps([self.counter, owner, self.measure])
        return BudgetCheck(key, self.measure, self.window, float(self.max))

    def describe(self) -> str:
        per = "per caller" if self.scope == "grant" else "for all callers"
        window = _window_text(self.window)
        if self.measure == "cost_usd":
            return f"{self.counter}: at most {self.max:g} USD per {window} {per}"
        if self.measure == "tokens":
            return f"{self.counter}: at most {int(self.max):,} tokens per {window} {per}"
        return f"{self.counter}: at most {int(self.max)} calls per {window} {per}"

    def amount_text(self, amount: float) -> str:
        """``1.25 USD`` / ``12,000 tokens``: a used or remaining amount in this budget's unit."""
        if self.measure == "cost_usd":
            return f"{amount:.4g} USD"
        return f"{int(amount):,} tokens"


def counter_key(counter: str, scope: str, scope_key: str) -> str:
    """The log a hit goes to; the same counter name anywhere is the same log."""
    return json.dumps([counter, None] if scope == "global" else [counter, scope_key])


def compile_limit(limit: Limit, pointer: str) -> CompiledLimit:
    return CompiledLimit(
        pointer, limit.counter, limit.window, limit.max, limit.scope, limit.measure
    )


def _window_text(seconds: float) -> str:
    for name, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0), ("second", 1.0)):
        if seconds == size:
            return name
    return f"{seconds:g} seconds"

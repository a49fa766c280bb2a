"""Rate limits as the engine sees them: a counter log key per scope plus window and max."""

from __future__ import annotations

import json
from dataclasses import dataclass

from llmgw_jupyter.policy.model import Limit
from llmgw_jupyter.store.policy import LimitCheck


@dataclass(frozen=True, slots=True)
class CompiledLimit:
    """One ``limits`` entry; ``pointer`` names it in decisions."""

    pointer: str
    counter: str
    window: float
    max: int
    scope: str

    def check_for(self, scope_key: str) -> LimitCheck:
        """The store check for this caller: ``grant`` scope keeps one log per caller."""
        return LimitCheck(counter_key(self.counter, self.scope, scope_key), self.window, self.max)

    def describe(self) -> str:
        per = "per caller" if self.scope == "grant" else "for all callers"
        return f"{self.counter}: at most {self.max} calls per {_window_text(self.window)} {per}"


def counter_key(counter: str, scope: str, scope_key: str) -> str:
    """The log a hit goes to; the same counter name anywhere is the same log."""
    return json.dumps([counter, None] if scope == "global" else [counter, scope_key])


def compile_limit(limit: Limit, pointer: str) -> CompiledLimit:
    return CompiledLimit(pointer, limit.counter, limit.window, limit.max, limit.scope)


def _window_text(seconds: float) -> str:
    for name, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0), ("second", 1.0)):
        if seconds == size:
            return name
    return f"{seconds:g} seconds"

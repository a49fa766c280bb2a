"""The audit of each call: one record per outcome, repeats collapsed into counts, values masked.

Identical refusals (and successful reads) within one window are audited once, then counted, so
no caller can make unbounded audit rows. The audit keeps argument keys and a hash, never values:
messages that quote a value have it masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from llmgw_jupyter.store.audit import AuditStore
from llmgw_jupyter.tools.context import Caller

AUDIT_RETENTION_SECONDS = 90 * 86400.0
REFUSAL_AUDIT_WINDOW_SECONDS = 60.0
MAX_SHOWN_TOOL_NAME = 64

RunKey = tuple[str, str, str, str]  # caller, tool group ("" for unknown tools), decision, rule


@dataclass
class _RefusalRun:
    """Identical refusals within one window: the first is audited, the rest only counted."""

    tool: str
    started: float
    last: float
    repeats: int = 0


class CallAudit:
    """Writes the audit records of the gateway's calls and decisions."""

    def __init__(
        self,
        store: AuditStore,
        clock: Callable[[], float],
        window_seconds: float = REFUSAL_AUDIT_WINDOW_SECONDS,
    ) -> None:
        self.store = store
        self.clock = clock
        self.window_seconds = window_seconds
        self._runs: dict[RunKey, _RefusalRun] = {}

    def record(
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
            message=without_values(message, args),
            args=args,
            approval_id=approval_id,
            ts=self.clock(),
        )

    def flush(self) -> None:
        """Write the counts of every open run of repeated refusals now (close does it too)."""
        self.flush_finished(None)

    def flush_finished(self, now: float | None) -> None:
        """Write the counts of the runs whose window ended (all of them when ``now`` is None)."""
        for key, run in list(self._runs.items()):
            if now is None or now - run.started >= self.window_seconds:
                del self._runs[key]
                self._write_run(key, run)

    def _counted_in_run(
        self, caller: Caller, tool: str, run_tool: str, decision: str, rule: str
    ) -> bool:
        """Identical refusals (and successful reads) are audited once per window for the same
        caller, tool, decision and rule, then counted; True when this one was only counted.
        ``run_tool`` groups tools (unknown tool names are one group: their names vary)."""
        now = self.clock()
        key = (caller.key, run_tool, decision, rule)
        run = self._runs.get(key)
        if run is not None and now - run.started < self.window_seconds:
            run.repeats += 1
            run.last = now
            return True
        if run is not None:
            self._write_run(key, run)
        self._runs[key] = _RefusalRun(tool=tool, started=now, last=now)
        return False

    def _write_run(self, key: RunKey, run: _RefusalRun) -> None:
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
            f"reads within {self.window_seconds:g} s are recorded once, then counted)",
            args={},
            ts=run.last,
        )


def shown_tool(name: str) -> str:
    """An unknown tool name as audits and messages show it: bounded, printable."""
    text = "".join(ch if ch.isprintable() else "?" for ch in name[:MAX_SHOWN_TOOL_NAME])
    return text + ("..." if len(name) > MAX_SHOWN_TOOL_NAME else "")


def _string_values(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _string_values(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _string_values(item)


def without_values(message: str, args: Mapping[str, Any]) -> str:
    """The audit keeps argument keys and a hash, never values: error and denial messages may
    quote one (``job <id> not found``, ``<working_dir> is not a directory``), so mask them."""
    quoted = {v for v in _string_values(args) if v.strip() and v in message}
    for value in sorted(quoted, key=len, reverse=True):
        message = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", "<value>", message)
    return message

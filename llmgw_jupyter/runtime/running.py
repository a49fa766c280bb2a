"""A launched job's shared state: why it is being stopped, when it last spoke, what it stored.

The runtime (cancel, shutdown), the scheduler (the running set), the supervisor (limits) and the
output reader (output, events) all look at the same ``RunningJob``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from llmgw_jupyter.runtime.outcome import StopReason


@dataclass
class RunningJob:
    """A launched (or launching) job: what its supervisor and the runtime share."""

    job_id: str
    provider: str
    stop_reason: StopReason | None = None
    error_detail: str | None = None
    cancel_reason: str | None = None
    last_output: float = field(default_factory=time.monotonic)
    events_stored: int = 0
    session_recorded: bool = False
    usage_stored: dict[str, int | float | None] | None = None  # last usage written
    task: asyncio.Task[None] | None = None
    _woken: asyncio.Future[None] | None = field(default=None, repr=False)

    def next_wake(self) -> asyncio.Future[None]:
        """A future the next stop request sets (the supervisor waits on it beside the exit: a
        plain future, not a task per wait on an event)."""
        self._woken = asyncio.get_running_loop().create_future()
        return self._woken

    def _wake(self) -> None:
        if self._woken is not None and not self._woken.done():
            self._woken.set_result(None)

    def request_stop(self, reason: StopReason, *, detail: str | None = None) -> None:
        """Stop the job for ``reason`` unless it is already being stopped for another."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.error_detail = detail
        self._wake()

    def cancel(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = StopReason.CANCEL
            self.cancel_reason = reason
        self._wake()

    def shut_down(self, cancel_reason: str | None) -> None:
        """The gateway stops: this overrides any other stop (the job ends interrupted or
        cancelled, with ``cancel_reason``)."""
        self.stop_reason = StopReason.SHUTDOWN
        self.cancel_reason = cancel_reason
        self._wake()

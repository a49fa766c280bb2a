"""Which caller opened each open MCP session: per-caller caps, and closing one caller's sessions.

Why here and not in the SDK: the SDK's ``StreamableHTTPSessionManager`` has one global
``max_sessions`` for everybody, so one grant could open them all and lock the owner out, and it
has no public way to list or end the sessions of one credential. The endpoint sees every request
and response on their way through, so it keeps its own ledger from public facts only:

- a request without ``Mcp-Session-Id`` (handshake era) that is answered below 400 with an
  ``Mcp-Session-Id`` header opened that session;
- a ``DELETE`` answered below 300 closed it; a 404 to the same caller says it no longer exists;
- the SDK ends a session after ``session_idle_timeout`` seconds without a request in flight; the
  ledger forgets it by the same rule, counted from when the last request through the endpoint
  ended (never earlier than the SDK, so a grant's count is never too low).

Openings are reserved before the SDK sees them, so concurrent openings cannot overshoot a cap.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Session:
    caller: str
    host: bytes  # the Host header of the opening request (it passed the DNS-rebinding check)
    in_flight: int = 0
    idle_since: float = 0.0


@dataclass(frozen=True)
class SessionRefusal:
    """Why a caller may not open another session now: which limit, and its value."""

    limit: str
    maximum: int
    message: str


class SessionLedger:
    """Open sessions per caller key; grants are capped, the owner never waits on them."""

    def __init__(
        self,
        *,
        per_grant: int | None,
        all_grants: int | None,
        idle_timeout: float | None,
        is_grant: Callable[[str], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_grant = per_grant
        self.all_grants = all_grants
        self.idle_timeout = idle_timeout
        self._is_grant = is_grant
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._opening: Counter[str] = Counter()

    # -- admission --------------------------------------------------------------------------
    def reserve(self, caller: str) -> SessionRefusal | None:
        """Hold a slot for one opening request of ``caller``, or say which limit refuses it."""
        self._forget_expired()  # every caller's, so sessions that idled out leave no trace
        if self._is_grant(caller):
            mine = self.count(caller)
            if self.per_grant is not None and mine >= self.per_grant:
                return SessionRefusal(
                    "max_mcp_sessions_per_grant",
                    self.per_grant,
                    f"{caller} already has {mine} open MCP sessions, the most one grant may "
                    f"have (max_mcp_sessions_per_grant = {self.per_grant})",
                )
            grants = sum(n for key, n in self._counts().items() if self._is_grant(key))
            if self.all_grants is not None and grants >= self.all_grants:
                return SessionRefusal(
                    "max_mcp_grant_sessions",
                    self.all_grants,
                    f"all grants together already have {grants} open MCP sessions, the most "
                    f"the server allows (max_mcp_grant_sessions = {self.all_grants})",
                )
        self._opening[caller] += 1
        return None

    def opened(self, caller: str, session_id: str | None, host: bytes) -> None:
        """The opening request of ``caller`` was answered; ``session_id`` if it opened one."""
        self._opening[caller] -= 1
        if self._opening[caller] <= 0:
            del self._opening[caller]
        if session_id is not None:
            self._sessions[session_id] = _Session(caller, host, idle_since=self._clock())

    # -- requests on a session ----------------------------------------------------------------
    def begin(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.in_flight += 1

    def end(self, session_id: str, caller: str, method: str, status: int | None) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            return
        session.in_flight = max(0, session.in_flight - 1)
        session.idle_since = self._clock()
        if session.caller != caller:
            return  # the SDK refused another caller with 404: the session itself lives on
        if status == 404 or (method == "DELETE" and status is not None and status < 300):
            self.forget(session_id)

    # -- queries ------------------------------------------------------------------------------
    def count(self, caller: str) -> int:
        return self._counts()[caller]

    def sessions_of(self, caller: str) -> list[tuple[str, bytes]]:
        """``(session id, Host header)`` of each session ``caller`` opened."""
        return [(sid, s.host) for sid, s in self._sessions.items() if s.caller == caller]

    def forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _counts(self) -> Counter[str]:
        counts = Counter(session.caller for session in self._sessions.values())
        counts.update(self._opening)
        return counts

    def _forget_expired(self) -> None:
        if self.idle_timeout is None:
            return
        cutoff = self._clock() - self.idle_timeout
        expired = [
            sid for sid, s in self._sessions.items() if s.in_flight == 0 and s.idle_since < cutoff
        ]
        for sid in expired:
            del self._sessions[sid]

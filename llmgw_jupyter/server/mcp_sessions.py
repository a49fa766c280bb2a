"""Which caller opened each open MCP session: per-caller caps, and closing one caller's sessions.

Why here and not in the SDK: the SDK's ``StreamableHTTPSessionManager`` has one global
``max_sessions`` for everybody, so one grant could open them all and lock the owner out, and it
has no public way to list or end the sessions of one credential. The endpoint sees every request
and response on their way through, so it keeps its own ledger from public facts only:

- a request without ``Mcp-Session-Id`` (handshake era) that is answered below 400 with an
  ``Mcp-Session-Id`` header opened that session;
- a ``DELETE`` answered below 300 closed it; a 404 to the same caller says it no longer exists;
- a session with no request in flight (an open GET stream counts) for ``idle_timeout`` seconds,
  counted from when its last request through the endpoint ended, has expired: it no longer
  counts, and ``take_expired`` hands it to the endpoint, which ends it in the SDK with a
  ``DELETE``. The ledger owns the idle rule (the SDK's own idle timeout is off) because requests
  the quick path answers never reach the SDK's transport, yet keep the session alive.

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
        self.clock = clock
        self._sessions: dict[str, _Session] = {}
        self._opening: Counter[str] = Counter()

    # -- admission --------------------------------------------------------------------------
    def reserve(self, caller: str) -> SessionRefusal | None:
        """Hold a slot for one opening request of ``caller``, or say which limit refuses it."""
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
            self._sessions[session_id] = _Session(caller, host, idle_since=self.clock())

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
        session.idle_since = self.clock()
        if session.caller != caller:
            return  # the SDK refused another caller with 404: the session itself lives on
        if status == 404 or (method == "DELETE" and status is not None and status < 300):
            self.forget(session_id)

    # -- queries ------------------------------------------------------------------------------
    def count(self, caller: str) -> int:
        return self._counts()[caller]

    def owner_of(self, session_id: str) -> str | None:
        """The caller key that opened ``session_id`` if it is open and has not expired."""
        session = self._sessions.get(session_id)
        if session is None or self._expired(session, self.clock()):
            return None
        return session.caller

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def sessions_of(self, caller: str) -> list[tuple[str, bytes]]:
        """``(session id, Host header)`` of each session ``caller`` opened."""
        return [(sid, s.host) for sid, s in self._sessions.items() if s.caller == caller]

    def forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    # -- expiry -------------------------------------------------------------------------------
    def next_expiry(self) -> float | None:
        """When (on ``clock``) the next idle session expires, or None while none can."""
        if self.idle_timeout is None:
            return None
        idle = [s.idle_since for s in self._sessions.values() if s.in_flight == 0]
        return min(idle) + self.idle_timeout if idle else None

    def take_expired(self) -> list[tuple[str, str, bytes]]:
        """Forget the sessions that idled out; ``(session id, caller, Host)`` of each, to end."""
        now = self.clock()
        expired = [(sid, s) for sid, s in self._sessions.items() if self._expired(s, now)]
        for sid, _ in expired:
            del self._sessions[sid]
        return [(sid, s.caller, s.host) for sid, s in expired]

    def _expired(self, session: _Session, now: float) -> bool:
        return (
            self.idle_timeout is not None
            and session.in_flight == 0
            and session.idle_since < now - self.idle_timeout
        )

    def _counts(self) -> Counter[str]:
        now = self.clock()
        counts = Counter(s.caller for s in self._sessions.values() if not self._expired(s, now))
        counts.update(self._opening)
        return counts

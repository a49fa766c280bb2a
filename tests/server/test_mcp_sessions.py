"""The session ledger's bookkeeping: what opens, closes and expires a session, per caller."""

from __future__ import annotations

from llmgw_jupyter.server.mcp_sessions import SessionLedger


class Clock:
    """A clock the test moves: the SDK's idle rule is about elapsed time, not about waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ledger(clock: Clock, idle: float | None = 60.0) -> SessionLedger:
    return SessionLedger(
        per_grant=2,
        all_grants=3,
        idle_timeout=idle,
        is_grant=lambda key: key.startswith("grant:"),
        clock=clock,
    )


def test_openings_are_reserved_so_concurrent_ones_cannot_overshoot() -> None:
    sessions = ledger(Clock())
    assert sessions.reserve("grant:a") is None
    assert sessions.reserve("grant:a") is None
    refused = sessions.reserve("grant:a")  # two openings in flight already
    assert refused is not None and refused.limit == "max_mcp_sessions_per_grant"
    sessions.opened("grant:a", None, b"h")  # that opening failed: its slot is free again
    assert sessions.reserve("grant:a") is None
    assert sessions.count("grant:a") == 2


def test_a_session_ends_by_delete_by_404_to_its_caller_or_by_idling_out() -> None:
    clock = Clock()
    sessions = ledger(clock)
    for sid in ("s1", "s2"):
        assert sessions.reserve("grant:a") is None
        sessions.opened("grant:a", sid, b"127.0.0.1:1")
    assert sessions.sessions_of("grant:a") == [("s1", b"127.0.0.1:1"), ("s2", b"127.0.0.1:1")]

    sessions.begin("s1")
    sessions.end("s1", "owner", "POST", 404)  # someone else's request: the session lives on
    assert sessions.count("grant:a") == 2
    sessions.begin("s1")
    sessions.end("s1", "grant:a", "DELETE", 200)
    assert sessions.count("grant:a") == 1

    sessions.begin("s2")  # a request in flight (an open stream) holds the session
    clock.now += 3600
    assert sessions.reserve("owner") is None
    assert sessions.count("grant:a") == 1
    sessions.end("s2", "grant:a", "GET", 200)
    clock.now += 59
    sessions.reserve("owner")
    assert sessions.count("grant:a") == 1
    clock.now += 2  # idle for longer than the SDK's timeout: it is gone there too
    sessions.reserve("owner")
    assert sessions.count("grant:a") == 0


def test_the_owner_is_never_counted_against_the_grants() -> None:
    sessions = ledger(Clock(), idle=None)
    for number in range(10):
        assert sessions.reserve("owner") is None
        sessions.opened("owner", f"o{number}", b"h")
    for key, sid in (("grant:a", "a1"), ("grant:a", "a2"), ("grant:b", "b1")):
        assert sessions.reserve(key) is None
        sessions.opened(key, sid, b"h")
    refused = sessions.reserve("grant:c")
    assert refused is not None and refused.limit == "max_mcp_grant_sessions"
    assert refused.maximum == 3 and "3 open MCP sessions" in refused.message
    assert sessions.reserve("owner") is None

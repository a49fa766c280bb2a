"""``notifications/tools/list_changed`` for the open sessions whose visible tools changed.

Why: the tools a caller sees come from its policy (the owner's file, hot-reloaded, or a grant's
own policy), so they change while sessions are open; the endpoint declares
``tools.listChanged`` and tells exactly the sessions whose list is now different.

Two wires: handshake-era sessions get the notification on their standalone GET stream; clients
of the 2026-07-28 revision (no sessions) opt in with ``subscriptions/listen``, served by the
SDK's ``ListenHandler`` over one ``InMemorySubscriptionBus`` per caller, so an event published
for one caller reaches that caller's listen streams only (the SDK declares ``listChanged`` on
that revision once ``subscriptions/listen`` is served).

How (event-driven, no polling of our own):
- ``seen`` records, for each session that listed tools, its caller, the names it was shown, the
  policy object they came from and the SDK ``ServerSession`` of that request (public: its
  ``send_tool_list_changed`` goes out on the session's standalone GET stream);
- ``changed()`` is the gateway's tools-changed listener (the owner's policy file reloaded): it
  recomputes every watched caller's list on the loop and notifies the sessions whose list
  differs from what they were shown;
- ``after_call(key, caller)`` catches what no file watcher reports, a grant's policy re-read
  when it was used (its policy file is checked then): if the policy object the caller's calls
  now use is not the one its list came from, its list is recomputed.
Sessions that ended are dropped whenever the lists are recomputed (``alive``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged

log = logging.getLogger(__name__)

NOTIFY_TIMEOUT = 5.0  # a client that does not read its GET stream must not hold the others up
MAX_LISTEN_STREAMS = 16  # subscriptions/listen streams one caller may hold open


@dataclass
class _Watched:
    caller: Any
    names: tuple[str, ...]
    policy: object
    sessions: dict[str, ServerSession] = field(default_factory=dict)
    listening: int = 0  # open subscriptions/listen streams
    bus: InMemorySubscriptionBus = field(default_factory=InMemorySubscriptionBus)
    listen: ListenHandler | None = None


class ToolListWatch:
    """The tool names each watched caller was shown, and its sessions to tell of changes."""

    def __init__(
        self,
        names_for: Callable[[Any], Awaitable[Sequence[str]]],
        policy_of: Callable[[Any], object],
        alive: Callable[[str], bool],
    ) -> None:
        self._names_for = names_for
        self._policy_of = policy_of
        self._alive = alive
        self._callers: dict[str, _Watched] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.sent = 0  # notifications sent so far (for logs and tests)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def stop(self) -> None:
        for watched in self._callers.values():
            if watched.listen is not None:
                watched.listen.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._callers.clear()

    def seen(
        self,
        session_id: str,
        key: str,
        caller: Any,
        session: ServerSession,
        names: Sequence[str],
        policy: object,
    ) -> None:
        """Session ``session_id`` of ``key`` was just shown ``names`` (from ``policy``)."""
        watched = self._callers.get(key)
        if watched is None or watched.policy is not policy:
            watched = self._callers[key] = _Watched(
                caller, tuple(names), policy, watched.sessions if watched else {}
            )
        watched.names = tuple(names)
        watched.sessions[session_id] = session

    async def listen(
        self,
        ctx: ServerRequestContext[Any, Any],
        params: types.SubscriptionsListenRequestParams,
        key: str,
        caller: Any,
    ) -> types.SubscriptionsListenResult:
        """Serve one ``subscriptions/listen`` stream of ``caller`` (2026-07-28)."""
        watched = self._callers.get(key)
        if watched is None:
            policy = self._policy_of(caller)
            names = tuple(await self._names_for(caller))
            watched = self._callers.setdefault(key, _Watched(caller, names, policy))
        if watched.listen is None:
            watched.listen = ListenHandler(watched.bus, max_subscriptions=MAX_LISTEN_STREAMS)
        watched.listening += 1
        try:
            return await watched.listen(ctx, params)
        finally:
            watched.listening -= 1

    def changed(self) -> None:
        """A policy that decides tool lists may have changed (any thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._refresh_soon, None)

    def after_call(self, key: str, caller: Any) -> None:
        """``key`` made a call: if its policy is not the one its list came from, recompute."""
        watched = self._callers.get(key)
        if watched is not None and self._policy_of(caller) is not watched.policy:
            self._refresh_soon([key])

    def _refresh_soon(self, keys: Iterable[str] | None) -> None:
        task = asyncio.ensure_future(self.refresh(keys))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refresh(self, keys: Iterable[str] | None = None) -> int:
        """Recompute the lists of ``keys`` (all when None); notify changed sessions; how many."""
        notify: list[ServerSession] = []
        publish: list[InMemorySubscriptionBus] = []
        for key in list(self._callers if keys is None else keys):
            watched = self._callers.get(key)
            if watched is None:
                continue
            for session_id in [sid for sid in watched.sessions if not self._alive(sid)]:
                del watched.sessions[session_id]
            if not watched.sessions and not watched.listening:
                del self._callers[key]
                continue
            policy = self._policy_of(watched.caller)
            names = tuple(await self._names_for(watched.caller))
            watched.policy = policy
            if names != watched.names:
                watched.names = names
                notify.extend(watched.sessions.values())
                if watched.listening:
                    publish.append(watched.bus)
        await asyncio.gather(*(self._notify(session) for session in notify))
        for bus in publish:
            await bus.publish(ToolsListChanged())
        return len(notify) + len(publish)

    async def _notify(self, session: ServerSession) -> None:
        try:
            await asyncio.wait_for(session.send_tool_list_changed(), NOTIFY_TIMEOUT)
        except Exception:  # best effort, like the SDK's own standalone notifications
            log.debug("llmgw: tools/list_changed not delivered", exc_info=True)
            return
        self.sent += 1

"""Wake-ups for everything that waits on jobs: no sleep loops anywhere.

Waiters register *before* they look at the store, so a change between the look and the wait is
never missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class JobChange:
    job_id: str
    status: str
    last_seq: int


class ChangeSubscription:
    """A bounded feed of changes; a slow reader loses the oldest and is told to resync."""

    def __init__(self, owner: JobNotifier, maxsize: int) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[JobChange] = asyncio.Queue(maxsize)
        self.dropped = 0

    def _offer(self, change: JobChange) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(change)

    async def get(self, timeout: float | None = None) -> JobChange | None:
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def __aiter__(self) -> AsyncIterator[JobChange]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[JobChange]:
        while True:
            yield await self._queue.get()

    def close(self) -> None:
        self._owner._subscriptions.discard(self)


class JobNotifier:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._subscriptions: set[ChangeSubscription] = set()

    @contextlib.contextmanager
    def waiter(self, job_id: str) -> Iterator[asyncio.Future[None]]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(future)
        try:
            yield future
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[job_id]

    def notify(self, change: JobChange) -> None:
        for future in self._waiters.get(change.job_id, ()):
            if not future.done():
                future.set_result(None)
        for subscription in list(self._subscriptions):
            subscription._offer(change)

    def subscribe(self, maxsize: int = 1000) -> ChangeSubscription:
        subscription = ChangeSubscription(self, maxsize)
        self._subscriptions.add(subscription)
        return subscription

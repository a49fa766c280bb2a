"""Wake-ups for everything that waits on jobs: no sleep loops anywhere.

Waiters register *before* they look at the store, so a change between the look and the wait is
never missed. Subscribers get a bounded feed of changes; one that falls behind gets ``RESYNC``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from llmgw_jupyter.records import JobRecord


@dataclass(frozen=True)
class JobChange:
    """A job changed: its status now, and its last event's sequence number.

    ``RESYNC`` (``is_resync``; an empty ``job_id``, status ``"resync"``) is not a job: it tells a
    subscriber that fell behind that changes were lost and it must reload everything it follows
    from the runtime (``list_jobs``, ``get``, ``events``). Changes after it arrive as usual.
    """

    job_id: str
    status: str
    last_seq: int

    @property
    def is_resync(self) -> bool:
        return self.status == RESYNC_STATUS and not self.job_id


RESYNC_STATUS = "resync"
RESYNC = JobChange("", RESYNC_STATUS, -1)


class ChangeSubscription:
    """A bounded feed of changes. A reader that lets it fill up loses what it has not read and
    gets one ``RESYNC`` in its place (then new changes as usual), so it knows to reload."""

    def __init__(self, owner: JobNotifier, maxsize: int) -> None:
        if maxsize == 1:  # 0 or less: unbounded, as asyncio.Queue
            raise ValueError("a bounded subscription holds at least 2 changes (a resync and one)")
        self._owner = owner
        self._queue: asyncio.Queue[JobChange] = asyncio.Queue(maxsize)

    def _offer(self, change: JobChange) -> None:
        if self._queue.full():
            while not self._queue.empty():  # all of it is superseded by the reload
                self._queue.get_nowait()
            self._queue.put_nowait(RESYNC)
        self._queue.put_nowait(change)

    async def get(self, timeout: float | None = None) -> JobChange | None:
        """The next change, or None when none came within ``timeout`` (0: only a queued one)."""
        if not self._queue.empty():
            return self._queue.get_nowait()
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

    def notify_record(self, record: JobRecord | None) -> None:
        """A job was stored in a new state (None: nothing changed, nothing to tell)."""
        if record is not None:
            self.notify(JobChange(record.id, record.status.value, record.last_seq))

    @property
    def subscriber_count(self) -> int:
        """Open subscriptions (a closed stream must not leave one behind)."""
        return len(self._subscriptions)

    def subscribe(self, maxsize: int = 1000) -> ChangeSubscription:
        subscription = ChangeSubscription(self, maxsize)
        self._subscriptions.add(subscription)
        return subscription

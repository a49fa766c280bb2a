"""Background tasks of the kernel side: kept alive until done, with one back-off schedule."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Waits between reconnection attempts of a follower (a back-off, never a polling loop)."""

_TASKS: set[asyncio.Task[Any]] = set()  # strong references: the loop keeps only weak ones


def keep(task: asyncio.Task[Any]) -> asyncio.Task[Any]:
    """Hold a reference to ``task`` until it is done (asyncio keeps only weak ones)."""
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task


def spawn(coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[Any] | None:
    """Run ``coro`` on the running loop; None (and the coroutine closed) when none runs."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # terminal IPython between cells: nothing runs a loop
        coro.close()
        return None
    return keep(loop.create_task(coro, name=name))

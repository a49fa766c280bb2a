"""Background tasks of the kernel side: kept alive until done, with one back-off schedule, and
display updates they send that a headless client would drop, sent again from the next cell."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

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


# -- display updates that a headless client may have dropped -------------------------------------
@dataclass
class _SentUpdate:
    """The last update of one display, and the request it was sent as a reply to."""

    shown: Any  # an IPython DisplayHandle
    obj: Any
    options: dict[str, Any]
    parent_msg_id: str | None


_SENT_UPDATES: dict[str, _SentUpdate] = {}  # display_id -> its last update since the last cell
_RUN_CELL_EVENTS = ("pre_run_cell", "post_run_cell")


def update_display(shown: Any, obj: Any, **options: Any) -> None:
    """``shown.update(obj, **options)``, sent again from the next cell if it went out elsewhere.

    An update sent by a background task carries the parent of the cell that started the task
    (or goes out between cells), and nbclient (papermill, nbconvert --execute) keeps only the
    messages of the cell it executes: the saved notebook would keep the display's first state.
    JupyterLab applies updates whatever their parent, so the second, identical one is harmless.
    """
    shown.update(obj, **options)
    shell = _kernel_shell()
    if shell is None:  # terminal IPython or plain Python: nothing drops updates
        return
    _install_resend(shell)
    _SENT_UPDATES[str(shown.display_id)] = _SentUpdate(
        shown, obj, dict(options), _parent_msg_id(shell)
    )


def resend_display_updates(*_event_args: Any) -> None:
    """At the start and end of a cell: send again (once) the updates the cell's client missed.

    A cell's client reads every message sent with that cell as parent until the cell is idle,
    so an update already sent under the executing cell arrived; any other is sent again now,
    under it (nbclient then updates every output with that display id).
    """
    if not _SENT_UPDATES:
        return
    shell = _kernel_shell()
    executing = None if shell is None else _parent_msg_id(shell)
    pending = list(_SENT_UPDATES.values())
    _SENT_UPDATES.clear()
    for sent in pending:
        if executing is not None and sent.parent_msg_id == executing:
            continue
        try:
            sent.shown.update(sent.obj, **sent.options)
        except Exception:  # a gone frontend must not break the user's cell
            log.exception("sending again the update of display %s failed", sent.shown.display_id)


def uninstall_resend(shell: Any) -> None:
    """Stop sending updates again (the extension is unloaded); pending ones are forgotten."""
    _SENT_UPDATES.clear()
    for event in _RUN_CELL_EVENTS:
        with contextlib.suppress(ValueError):
            shell.events.unregister(event, resend_display_updates)


def _install_resend(shell: Any) -> None:
    for event in _RUN_CELL_EVENTS:
        if resend_display_updates not in shell.events.callbacks[event]:
            shell.events.register(event, resend_display_updates)


def _kernel_shell() -> Any | None:
    """The kernel's shell, when displays go to a Jupyter client (None in terminal IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or not hasattr(shell.display_pub, "parent_header"):
        return None
    return shell


def _parent_msg_id(shell: Any) -> str | None:
    """The request that a display message sent here and now would name as its parent."""
    header = shell.display_pub.parent_header or {}
    msg_id = header.get("msg_id")
    return str(msg_id) if msg_id else None

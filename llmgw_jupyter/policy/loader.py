"""A policy file that is watched and reloaded, failing closed.

At start a bad file raises (the gateway must not serve agents on a policy it cannot read). Later a
bad file leaves the last good policy in force and sets ``last_error``.

``start`` watches the file's directory with ``watchfiles`` (OS change events, not a poll): the
directory, because editors replace files atomically (write a temporary file, rename it over the
old one) and a deleted file can only be seen re-created from its directory. Each event runs
``check``, which stats the file (mtime, size, inode) and, while the mtime is too recent to trust,
compares a content hash, so two quick same-size writes are not missed. ``check`` is also public for
callers that look at a file only when they use it (the gateway's grant policy files).

``watchfiles`` waits for events in a worker thread; ``check`` and the listeners run on the event
loop that started the watch, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from watchfiles import Change, awatch

from llmgw_jupyter.policy.compiled import Policy, allow_all_policy, parse_policy_text
from llmgw_jupyter.policy.model import PolicyValidationError

log = logging.getLogger(__name__)

Signature = tuple[int, int, int, int]  # mtime_ns, size, inode, device
_RACY_SECONDS = 2.0  # mtimes this fresh may hide a second write within the same tick
_REWATCH_SECONDS = 1.0  # how often to look for a deleted directory to come back
_MAX_REWATCH_SECONDS = 60.0  # the longest pause between attempts after the watch failed
_STOP_SECONDS = 5.0  # how long ``stop`` waits for the watcher thread before cancelling it
# A polling watcher (WATCHFILES_FORCE_POLLING, for filesystems without change events) takes its
# first snapshot in its own thread shortly after the watch starts: one more look after this long
# covers a change made in that moment.
_SECOND_LOOK_SECONDS = 1.0


def _signature(path: Path) -> Signature | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def _watched_directories(path: Path) -> frozenset[Path]:
    """The file's directory and, for a symlink, its target's (where the edits then happen)."""
    directories = {path.absolute().parent}
    if path.is_symlink():
        directories.add(path.resolve().parent)
    return frozenset(directories)


def _change_filter(path: Path, directories: frozenset[Path]) -> Callable[[Change, str], bool]:
    """Keep the events that can change what ``path`` reads, or that end the watch.

    For a symlink every change in its directory counts (a Kubernetes ConfigMap, for one,
    retargets a link beside the file); ``check`` then decides cheaply whether anything changed.
    """
    wanted = {path.absolute(), path.resolve()} | _as_reported(directories)
    anything = path.is_symlink()

    def relevant(_change: Change, changed: str) -> bool:
        return anything or Path(changed) in wanted

    return relevant


def _as_reported(directories: frozenset[Path]) -> frozenset[Path]:
    """The directories as given and resolved: some backends (macOS) report resolved paths."""
    return directories | {directory.resolve() for directory in directories}


class PolicySource:
    """The current policy of one file (or the allow-all owner default when ``path`` is None)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.last_error: str | None = None
        self.generation = 0  # bumped after every reload attempt, good or bad
        self._listeners: list[Callable[[PolicySource], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._second_look: asyncio.TimerHandle | None = None
        self._signature: Signature | None = None
        self._digest: str | None = None
        if self.path is None:
            self._policy = allow_all_policy()
            return
        self._signature = _signature(self.path)
        data = self.path.read_bytes()  # a missing or unreadable file raises: fail closed
        self._digest = hashlib.sha256(data).hexdigest()
        self._policy = parse_policy_text(data.decode("utf-8"), str(self.path))

    @property
    def policy(self) -> Policy:
        """The policy in force: the last one that loaded."""
        return self._policy

    def add_listener(self, callback: Callable[[PolicySource], None]) -> None:
        """Called (on the event loop) after each reload attempt, good or bad."""
        self._listeners.append(callback)

    def check(self) -> bool:
        """Reload if the file changed; True when a reload was attempted."""
        if self.path is None:
            return False
        attempted = self._reload_if_changed(self.path)
        if attempted:
            for callback in list(self._listeners):
                try:
                    callback(self)
                except Exception:  # a listener must not stop the watcher
                    log.exception("policy reload listener failed")
        return attempted

    def _reload_if_changed(self, path: Path) -> bool:
        signature = _signature(path)
        if signature is None:
            if self._digest == "missing":
                return False
            self._signature, self._digest = None, "missing"
            return self._failed(f"{path}: policy file is missing; keeping the last good policy")
        racy = time.time() - signature[0] / 1e9 < _RACY_SECONDS
        if signature == self._signature and not racy:
            return False
        try:
            data = path.read_bytes()
        except OSError as exc:
            self._signature, self._digest = signature, None
            return self._failed(f"{path}: cannot read policy file: {exc}")
        self._signature = signature
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            policy = parse_policy_text(data.decode("utf-8", errors="replace"), str(path))
        except PolicyValidationError as exc:
            return self._failed(f"{exc}; keeping the last good policy")
        self._policy = policy
        self.last_error = None
        self.generation += 1
        log.info("policy reloaded from %s", path)
        return True

    def _failed(self, message: str) -> bool:
        self.last_error = message
        self.generation += 1
        log.warning("%s", message)
        return True

    async def start(self) -> None:
        """Watch the file from a background task on the running loop.

        On return the watch is in place and a change made between loading and watching has been
        looked at.
        """
        if self.path is None or self._task is not None:
            return
        self._stopping = asyncio.Event()
        watching = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._watch(self.path, watching))
        await watching.wait()

    async def stop(self) -> None:
        """Stop watching; the watcher thread notices the stop event within one ``step``."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        if self._second_look is not None:
            self._second_look.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=_STOP_SECONDS)
        except asyncio.TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self, path: Path, watching: asyncio.Event) -> None:
        """Run ``check`` on every relevant change until stopped; re-watch a replaced directory."""
        backoff = _REWATCH_SECONDS
        while not self._stopping.is_set():
            directories = _watched_directories(path)
            if not all(directory.is_dir() for directory in directories):
                self._caught_up(watching)  # reports the file missing
                await self._pause(_REWATCH_SECONDS)
                continue
            # ``awatch`` puts the OS watch in place before its first await, so a callback queued
            # now runs once the watch is there: a change made before it is looked at then.
            loop = asyncio.get_running_loop()
            loop.call_soon(self._caught_up, watching)
            self._second_look = loop.call_later(_SECOND_LOOK_SECONDS, self._check_logged)
            try:
                await self._watch_directories(path, directories)
            except Exception:
                log.exception("policy watch of %s failed; watching again in %ss", path, backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, _MAX_REWATCH_SECONDS)
            else:
                backoff = _REWATCH_SECONDS

    async def _watch_directories(self, path: Path, directories: frozenset[Path]) -> None:
        """Return when stopped, when a watched directory goes away or a symlink moves elsewhere."""
        gone_if_changed = _as_reported(directories)
        async for changes in awatch(
            *directories,
            watch_filter=_change_filter(path, directories),
            stop_event=self._stopping,
            recursive=False,
        ):
            self._check_logged()
            if any(Path(changed) in gone_if_changed for _change, changed in changes):
                return  # a watched directory itself was deleted or moved: watch it anew
            if _watched_directories(path) != directories:
                return

    def _caught_up(self, watching: asyncio.Event) -> None:
        self._check_logged()
        watching.set()

    def _check_logged(self) -> None:
        try:
            self.check()
        except Exception:  # e.g. a permission error on stat: keep watching
            log.exception("policy reload of %s failed", self.path)

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` or until ``stop``, whichever comes first."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

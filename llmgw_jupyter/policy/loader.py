"""A policy file that is watched and reloaded, failing closed.

At start a bad file raises (the gateway must not serve agents on a policy it cannot read). Later a
bad file leaves the last good policy in force and sets ``last_error``. Change detection stats the
file (mtime, size, inode) and, while the mtime is too recent to trust, compares a content hash, so
two quick same-size writes are not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from llmgw_jupyter.policy.compiled import Policy, allow_all_policy, parse_policy_text
from llmgw_jupyter.policy.model import PolicyValidationError

log = logging.getLogger(__name__)

Signature = tuple[int, int, int, int]  # mtime_ns, size, inode, device
_RACY_SECONDS = 2.0  # mtimes this fresh may hide a second write within the same tick


def _signature(path: Path) -> Signature | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


class PolicySource:
    """The current policy of one file (or the allow-all owner default when ``path`` is None)."""

    def __init__(self, path: str | Path | None, *, interval: float = 0.5) -> None:
        self.path = Path(path) if path is not None else None
        self.interval = interval
        self.last_error: str | None = None
        self.generation = 0  # bumped after every reload attempt, good or bad
        self._lock = threading.Lock()
        self._listeners: list[Callable[[PolicySource], None]] = []
        self._task: asyncio.Task[None] | None = None
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
        """Called (on the checking thread) after each reload attempt."""
        self._listeners.append(callback)

    def check(self) -> bool:
        """Reload if the file changed; True when a reload was attempted."""
        if self.path is None:
            return False
        with self._lock:
            attempted = self._check_locked(self.path)
        if attempted:
            for callback in list(self._listeners):
                try:
                    callback(self)
                except Exception:  # a listener must not stop the watcher
                    log.exception("policy reload listener failed")
        return attempted

    def _check_locked(self, path: Path) -> bool:
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
        """Watch the file from a background task on the running loop."""
        if self.path is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
            except Exception:
                log.exception("policy watch failed")

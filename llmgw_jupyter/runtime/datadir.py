"""Guards of the data directory: one runtime per directory, and room kept to record endings."""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from pathlib import Path
from typing import IO

from llmgw_jupyter.errors import ErrorCategory, GatewayError

# Space kept free in the data dir: on a full disk it is released so the gateway can still record
# how each job ended; while it cannot be re-made, new submissions are refused as disk_full.
DISK_RESERVE_BYTES = 512 * 1024


def take_lock(path: Path) -> IO[str]:
    """One runtime per data directory: two would both 'recover' each other's live jobs."""
    handle = open(path, "a+")  # noqa: SIM115 - held for the runtime's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise GatewayError(
            ErrorCategory.CONFLICT,
            f"{path.parent} is in use by another llmgw runtime (pid {holder})",
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class DiskReserve:
    """A file of ``DISK_RESERVE_BYTES`` that is given back when the disk fills up."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "disk-reserve"
        self.ok = True

    def ensure(self) -> bool:
        """Make (or find) the reserve; False while the disk has no room for it."""
        try:
            if self.path.stat().st_size == DISK_RESERVE_BYTES:
                self.ok = True
                return True
        except FileNotFoundError:
            pass
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, bytes(DISK_RESERVE_BYTES))
            finally:
                os.close(fd)
        except OSError:
            self.path.unlink(missing_ok=True)
            self.ok = False
            return False
        self.ok = True
        return True

    def release(self) -> None:
        """Free the reserve: room to record how jobs ended on a full disk."""
        self.ok = False
        self.path.unlink(missing_ok=True)


def is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    return isinstance(error, sqlite3.OperationalError) and "full" in str(error).lower()

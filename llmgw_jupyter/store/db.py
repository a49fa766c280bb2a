"""One SQLite connection per store, shared by the event loop and worker threads.

Statements are short; the RLock makes each statement or transaction atomic across threads, and
WAL mode plus a busy timeout lets other processes (the ``llmgw`` CLI, a second reader) share the
file safely.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmgw_jupyter.store.schema import MIGRATIONS

Params = Sequence[Any] | dict[str, Any]


class SchemaTooNewError(RuntimeError):
    """The file was written by a newer llmgw-jupyter; refusing to touch it protects its data."""


class Database:
    """A thread-safe SQLite connection with migrations applied on open."""

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path) if str(path) != ":memory:" else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # SQLite gives its -wal and -shm files the database file's mode: 0600 for all three.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=busy_timeout_ms / 1000
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if self.path is not None:
            self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self.transaction(immediate=True) as conn:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current > len(MIGRATIONS):
                raise SchemaTooNewError(
                    f"{self.path}: schema version {current} is newer than this llmgw-jupyter "
                    f"supports ({len(MIGRATIONS)}); upgrade llmgw-jupyter"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in _split_statements(MIGRATIONS[version - 1]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")

    @contextmanager
    def transaction(self, *, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """Run a group of statements atomically (``BEGIN IMMEDIATE`` takes the write lock now)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield self._conn
            except BaseException:
                # After SQLITE_FULL (and some other errors) SQLite has already rolled back:
                # a second ROLLBACK would hide the real error.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        with self.transaction():
            self._conn.executemany(sql, rows)

    def query(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    def data_version(self) -> int:
        """Changes when another connection (another process) commits: a cheap staleness stamp
        for caches of rows this process does not write itself."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def change_stamp(self) -> tuple[int, int]:
        """Changes whenever anything in the file may have: a row written through this
        connection (SQLite's ``total_changes``, counted even if rolled back) or a commit by
        any other connection (``PRAGMA data_version``). Caches of whole answers use it: the
        same stamp means every row read since is still what it was."""
        with self._lock:
            data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            return self._conn.total_changes, int(data_version)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _split_statements(script: str) -> list[str]:
    """Split a migration into statements so they run inside our own transaction.

    ``executescript`` would commit implicitly; ``sqlite3.complete_statement`` finds the real ends.
    """
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements

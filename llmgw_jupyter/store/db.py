"""One SQLite connection per store, shared by the event loop and worker threads.

Statements are short; the RLock makes each statement or transaction atomic across threads, and
WAL mode plus a busy timeout lets other processes (the ``llmgw`` CLI, a second reader) share the
file safely.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmgw_jupyter.store.schema import MIGRATIONS

Params = Sequence[Any] | dict[str, Any]
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


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

    def changes_of(self, *tables: str) -> Callable[[], tuple[int, int]]:
        """A stamp of ``tables``: it moves whenever one of their rows may have changed, so a
        cache of whole answers read from them is current while the stamp holds.

        Writes through this connection are counted by TEMP triggers (private to it, in memory,
        fired for every insert, update and delete of those tables whatever code issues it,
        foreign-key cascades included); commits by any other connection (another process)
        move ``PRAGMA data_version``. Writes to other tables (rate-limit hits, audit rows)
        leave the stamp alone."""
        for table in tables:
            if not _IDENTIFIER.fullmatch(table):
                raise ValueError(f"not a table name: {table!r}")
        counter = "+".join(sorted(tables))
        with self.transaction():
            conn = self._conn
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS llmgw_changes (name TEXT PRIMARY KEY, n INTEGER)"
            )
            conn.execute("INSERT OR IGNORE INTO llmgw_changes VALUES (?, 0)", (counter,))
            for table in tables:
                for event in ("INSERT", "UPDATE", "DELETE"):
                    trigger = f"llmgw_{counter.replace('+', '_')}_{table}_{event.lower()}"
                    conn.execute(
                        f"CREATE TEMP TRIGGER IF NOT EXISTS {trigger} AFTER {event} ON "
                        f"main.{table} BEGIN UPDATE llmgw_changes SET n = n + 1 "
                        f"WHERE name = '{counter}'; END"
                    )

        def stamp() -> tuple[int, int]:
            with self._lock:
                row = self._conn.execute(
                    "SELECT n, (SELECT data_version FROM pragma_data_version()) "
                    "FROM llmgw_changes WHERE name = ?",
                    (counter,),
                ).fetchone()
            return int(row[0]), int(row[1])

        return stamp

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

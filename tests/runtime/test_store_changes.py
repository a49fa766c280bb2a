"""A stamp of some tables: it moves with their rows, whoever writes them, and only with them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from runtime.test_store import insert

from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.jobs import JobStore


def test_the_stamp_moves_with_every_write_to_its_tables_and_no_other(tmp_path: Path) -> None:
    db = Database(tmp_path / "store.sqlite3")
    try:
        store = JobStore(db)
        stamp = db.changes_of("jobs", "job_events")
        before = stamp()
        insert(store, "a")
        inserted = stamp()
        assert inserted != before
        store.update_job("a", final_message="changed")
        updated = stamp()
        assert updated != inserted
        store.append_events("a", [(1001.0, "item.completed", "x", {})])
        appended = stamp()
        assert appended != updated

        # Another table (the rate-limit hits a limited grant writes on every call): unmoved.
        db.execute("INSERT INTO rate_hits (counter_key, ts) VALUES ('k', 1.0)")
        db.execute(
            "INSERT INTO audit (ts, caller, tool, decision, args_sha256)"
            " VALUES (1, 'o', 't', 'a', '')"
        )
        assert stamp() == appended

        # A raw statement outside JobStore, and an event deleted by the job's cascade: moved.
        db.execute("DELETE FROM jobs WHERE id = 'a'")
        assert stamp() != appended
        assert db.query("SELECT count(*) FROM job_events")[0][0] == 0
    finally:
        db.close()


def test_a_commit_by_another_connection_moves_the_stamp(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    db = Database(path)
    try:
        stamp = db.changes_of("jobs")
        before = stamp()
        other = sqlite3.connect(path)
        with other:
            other.execute("INSERT INTO rate_hits (counter_key, ts) VALUES ('k', 1.0)")
        other.close()
        assert stamp() != before  # another process: whatever it wrote, look again
    finally:
        db.close()


def test_table_names_are_checked(tmp_path: Path) -> None:
    db = Database(tmp_path / "store.sqlite3")
    try:
        with pytest.raises(ValueError, match="not a table name"):
            db.changes_of("jobs; DROP TABLE jobs")
    finally:
        db.close()

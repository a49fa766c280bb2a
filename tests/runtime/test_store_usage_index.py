"""The panel's usage totals come from an index, not from every job row."""

from __future__ import annotations

from pathlib import Path

from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.jobs import USAGE_TOTALS_SQL


def test_usage_totals_read_the_covering_index_alone(tmp_path: Path) -> None:
    """Every job's row holds its arguments and answer; the totals need none of them."""
    db = Database(tmp_path / "jobs.sqlite")
    try:
        plan = db.query("EXPLAIN QUERY PLAN " + USAGE_TOTALS_SQL.format(where=""))
        details = " | ".join(str(row["detail"]) for row in plan)
        assert "USING COVERING INDEX jobs_usage" in details, details
        assert "TEMP B-TREE" not in details, details  # grouped in the index's order
    finally:
        db.close()

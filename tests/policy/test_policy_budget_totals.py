"""Budget admission reads running totals (schema v5); they must say what summing the charges says.

``budget_room`` takes what a budget used in its window from two running totals instead of a sum
over every charge; these tests hold it to the plain sum (``budget_used``) whatever order the
charges arrive in, after pruning, and for charges written before the totals existed.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.limits import BudgetCheck
from llmgw_jupyter.store.policy import PolicyStore
from llmgw_jupyter.store.schema import MIGRATIONS

KEY = '["spend", "grant:a", "cost_usd"]'
OTHER = '["spend", "grant:b", "cost_usd"]'


def used_by_admission(store: PolicyStore, key: str, window: float, now: float) -> float:
    """What ``budget_room`` says was used: a budget of 0 is always full, so it reports it."""
    room = store.budget_room([BudgetCheck(key, "cost_usd", window, 0.0)], lambda: now)
    assert not room.admitted
    return room.used


def charge(store: PolicyStore, job: str, key: str, amount: float, ts: float) -> None:
    store.attach_budgets(job, [BudgetCheck(key, "cost_usd", 3600.0, 1.0)])
    store.charge_job(job, 0, amount, final=True, now=ts)


def test_running_totals_match_the_sum_whatever_order_charges_arrive_in(
    store: PolicyStore,
) -> None:
    rng = random.Random(13)
    now = 1_000_000.0
    for index in range(300):
        # Mostly in order, sometimes earlier (a clock stepping back), some on the same second.
        ts = now - 3000 + index * 10 - (rng.choice([0, 0, 0, 500, 2500]))
        key = KEY if rng.random() < 0.8 else OTHER
        charge(store, f"job-{index}", key, round(rng.uniform(0.001, 0.5), 4), float(int(ts)))
    for window in (1.0, 60.0, 600.0, 1800.0, 3000.0, 3600.0, 86400.0):
        for key in (KEY, OTHER):
            expected = store.budget_used(key, window, now=now)
            got = used_by_admission(store, key, window, now)
            assert got == pytest.approx(expected, abs=1e-9), (key, window)


def test_pruning_old_charges_leaves_what_the_window_used_unchanged(
    store: PolicyStore,
) -> None:
    for index in range(10):
        charge(store, f"job-{index}", KEY, 0.1 * (index + 1), 1000.0 + 600 * index)
    now = 1000.0 + 600 * 9
    before = used_by_admission(store, KEY, 3600.0, now)
    assert before == pytest.approx(sum(0.1 * (i + 1) for i in range(4, 10)))
    assert store.prune_budget_charges(now) == 4  # the charges older than the window
    assert used_by_admission(store, KEY, 3600.0, now) == before


def test_a_budget_exactly_full_is_full_despite_float_rounding(store: PolicyStore) -> None:
    for index, amount in enumerate([0.1, 0.2, 0.3, 0.1, 0.2, 0.1]):
        charge(store, f"job-{index}", KEY, amount, 1000.0 + index)
    # In the window: 0.3 + 0.1 + 0.2 + 0.1 = 0.7, exactly the budget's max.
    room = store.budget_room([BudgetCheck(KEY, "cost_usd", 3.5, 0.7)], lambda: 1005.0)
    assert not room.admitted and room.used == 0.7


def test_charges_are_append_only(store: PolicyStore, db: Database) -> None:
    charge(store, "job-1", KEY, 0.5, 1000.0)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE budget_charges SET amount = 0.1")
    assert used_by_admission(store, KEY, 60.0, 1000.0) == 0.5


def test_charges_written_before_the_running_totals_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "v4.sqlite"
    version = MIGRATIONS.index(next(m for m in MIGRATIONS if "running" in m))
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:version]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {version}")
    rows = [(KEY, 1000.0, 0.25, "a"), (KEY, 900.0, 0.5, "b"), (OTHER, 950.0, 2.0, "c")]
    rows += [(KEY, 1000.0, 0.125, "d")]
    conn.executemany(
        "INSERT INTO budget_charges (budget_key, ts, amount, job_id) VALUES (?, ?, ?, ?)", rows
    )
    conn.commit()
    conn.close()
    db = Database(path)
    try:
        store = PolicyStore(db)
        assert used_by_admission(store, KEY, 200.0, 1000.0) == 0.875
        assert used_by_admission(store, KEY, 50.0, 1000.0) == 0.375
        assert used_by_admission(store, OTHER, 200.0, 1000.0) == 2.0
        charge(store, "e", KEY, 1.0, 950.0)  # after the upgrade, between the old ones
        assert used_by_admission(store, KEY, 200.0, 1000.0) == 1.875
        assert used_by_admission(store, KEY, 60.0, 1000.0) == 1.375
    finally:
        db.close()

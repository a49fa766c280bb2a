"""SQL of rate limits and budgets: the sliding log of admitted hits and the per-job charges.

Rate limits are a sliding log of admitted hits: a call is admitted only if, inside one
``BEGIN IMMEDIATE`` transaction, every limit still has room; then one hit per counter is inserted.
Being in SQLite, counters are exact across threads and processes, survive restarts and do not
care about policy reloads. Budgets charge what each job used (tokens or cost) to their logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from llmgw_jupyter.store.db import Database


# -- rate limits ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One limit to enforce on one counter log (the key already carries the scope)."""

    counter_key: str
    window: float
    max: int


@dataclass(frozen=True, slots=True)
class AcquireResult:
    """Admitted with one hit id per distinct counter, or refused with the blocking checks.

    ``hit_keys[i]`` is the counter key of ``hit_ids[i]``.
    """

    admitted: bool
    hit_ids: tuple[int, ...]
    blocked: tuple[int, ...]
    retry_after: float | None
    now: float
    hit_keys: tuple[str, ...] = ()


# -- budgets ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """One budget on one log: ``budget_key`` carries counter, scope and measure."""

    budget_key: str
    measure: str  # "tokens" | "cost_usd"
    window: float
    max: float


@dataclass(frozen=True, slots=True)
class BudgetRoom:
    """Whether a new job fits: the first full budget's index, what it used, when it frees up."""

    admitted: bool
    blocked: int = -1
    used: float = 0.0
    retry_after: float | None = None


def usage_amount(measure: str, tokens: int, cost_usd: float | None) -> float:
    """What a job used, in a budget's unit (a CLI that reports no cost charges no money)."""
    if measure == "tokens":
        return float(tokens)
    return float(cost_usd or 0.0)


class LimitStore:
    """Every SQL statement of rate limits and budgets."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Largest window already recorded per counter key, to skip a redundant upsert per call.
        self._known_windows: dict[str, float] = {}

    # -- rate limits --------------------------------------------------------------------------
    def acquire(self, checks: Sequence[LimitCheck], clock: Callable[[], float]) -> AcquireResult:
        """Admit one call against every check atomically, or against none.

        The clock is read inside the write lock so hits are logged in admission order. A check
        counts every hit newer than ``now - window`` (later ones too, should the clock step
        back), which keeps "at most max in any interval of the window's length" true.
        """
        windows: dict[str, float] = {}
        for check in checks:
            windows[check.counter_key] = max(windows.get(check.counter_key, 0.0), check.window)
        with self.db.transaction(immediate=True) as conn:
            now = clock()
            blocked: list[int] = []
            retry_after = 0.0
            for index, check in enumerate(checks):
                # The max-th newest hit in the window: if it exists the limit is full, and the
                # call may retry once it leaves the window.
                row = conn.execute(
                    "SELECT ts FROM rate_hits WHERE counter_key = ? AND ts > ?"
                    " ORDER BY ts DESC LIMIT 1 OFFSET ?",
                    (check.counter_key, now - check.window, check.max - 1),
                ).fetchone()
                if row is not None:
                    blocked.append(index)
                    retry_after = max(retry_after, row[0] + check.window - now)
            if blocked:
                return AcquireResult(False, (), tuple(blocked), retry_after, now)
            hit_ids: list[int] = []
            for key, window in windows.items():
                cursor = conn.execute(
                    "INSERT INTO rate_hits (counter_key, ts) VALUES (?, ?)", (key, now)
                )
                hit_ids.append(int(cursor.lastrowid or 0))
                if self._known_windows.get(key, 0.0) < window:
                    conn.execute(
                        "INSERT INTO rate_counters (counter_key, max_window) VALUES (?, ?)"
                        " ON CONFLICT (counter_key)"
                        " DO UPDATE SET max_window = max(max_window, excluded.max_window)",
                        (key, window),
                    )
        for key, window in windows.items():
            if self._known_windows.get(key, 0.0) < window:
                self._known_windows[key] = window
        return AcquireResult(True, tuple(hit_ids), (), None, now, tuple(windows))

    def release_hits(self, hit_ids: Iterable[int]) -> int:
        """Give reservations back (the call was refused later); returns how many were removed."""
        ids = list(hit_ids)
        if not ids:
            return 0
        marks = ", ".join("?" for _ in ids)
        with self.db.transaction(immediate=True) as conn:
            return conn.execute(f"DELETE FROM rate_hits WHERE id IN ({marks})", ids).rowcount

    def count_hits(self, counter_key: str, since: float) -> int:
        row = self.db.query_one(
            "SELECT count(*) FROM rate_hits WHERE counter_key = ? AND ts > ?", (counter_key, since)
        )
        return int(row[0]) if row is not None else 0

    def prune_hits(self, now: float) -> int:
        """Drop hits older than the longest window ever enforced on their counter."""
        with self.db.transaction(immediate=True) as conn:
            return conn.execute(
                "DELETE FROM rate_hits WHERE ts <= ? - coalesce((SELECT max_window FROM"
                " rate_counters c WHERE c.counter_key = rate_hits.counter_key), 0)",
                (now,),
            ).rowcount

    # -- budgets ----------------------------------------------------------------------------
    def budget_room(self, checks: Sequence[BudgetCheck], clock: Callable[[], float]) -> BudgetRoom:
        """Room for one more job in every budget: what was charged in the window is below max.

        A full budget frees up once enough of its oldest charges leave the window; that moment
        is ``retry_after`` seconds away.

        What was used is read from the charges' running totals (schema v5): two index seeks
        per budget however many charges the window holds, where summing them scanned every
        one (a job start with two budgets of 1000 charges each: 0.66 ms, now 0.02 ms). The
        difference of two running totals is rounded to 1e-9 (a nano-dollar; tokens are whole)
        so that float rounding of the totals cannot tip a budget that is exactly full."""
        with self.db.transaction() as conn:
            now = clock()
            for index, check in enumerate(checks):
                since = now - check.window
                row = conn.execute(
                    "SELECT coalesce((SELECT running FROM budget_charges WHERE budget_key = ?1"
                    " ORDER BY ts DESC, id DESC LIMIT 1) - (SELECT running - amount"
                    " FROM budget_charges WHERE budget_key = ?1 AND ts > ?2"
                    " ORDER BY ts, id LIMIT 1), 0)",
                    (check.budget_key, since),
                ).fetchone()
                used = max(0.0, round(float(row[0]), 9))
                if used < check.max:
                    continue
                excess = used - check.max
                freed = 0.0
                retry_after = check.window
                for ts, amount in conn.execute(
                    "SELECT ts, amount FROM budget_charges WHERE budget_key = ? AND ts > ?"
                    " ORDER BY ts",
                    (check.budget_key, since),
                ):
                    freed += amount
                    if freed > excess:
                        retry_after = max(0.0, ts + check.window - now)
                        break
                return BudgetRoom(False, index, used, retry_after)
        return BudgetRoom(True)

    def attach_budgets(self, job_id: str, checks: Iterable[BudgetCheck]) -> None:
        """Charge this job's usage to these budgets from now on (kept across restarts)."""
        rows = [(job_id, c.budget_key, c.measure, c.window) for c in checks]
        if not rows:
            return
        with self.db.transaction(immediate=True) as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO job_budgets (job_id, budget_key, measure, window)"
                " VALUES (?, ?, ?, ?)",
                rows,
            )

    def open_budget_jobs(self) -> list[str]:
        """Jobs whose usage may still grow their budgets' charges."""
        rows = self.db.query("SELECT DISTINCT job_id FROM job_budgets WHERE settled = 0")
        return [row[0] for row in rows]

    def charge_job(
        self,
        job_id: str,
        tokens: int,
        cost_usd: float | None,
        *,
        final: bool = False,
        now: float | None = None,
    ) -> float:
        """Bring the job's charges up to its usage so far; returns the largest amount added.

        Idempotent and exact under concurrency: what was already charged is read in the same
        write transaction, so a usage figure is charged once however often it is reported.
        ``final`` settles the job (no later charge)."""
        added = 0.0
        with self.db.transaction(immediate=True) as conn:
            ts = time.time() if now is None else now
            attached = conn.execute(
                "SELECT budget_key, measure FROM job_budgets WHERE job_id = ? AND settled = 0",
                (job_id,),
            ).fetchall()
            for key, measure in attached:
                target = usage_amount(measure, tokens, cost_usd)
                row = conn.execute(
                    "SELECT coalesce(sum(amount), 0) FROM budget_charges"
                    " WHERE job_id = ? AND budget_key = ?",
                    (job_id, key),
                ).fetchone()
                delta = target - float(row[0])
                if delta > 0:
                    conn.execute(
                        "INSERT INTO budget_charges (budget_key, ts, amount, job_id)"
                        " VALUES (?, ?, ?, ?)",
                        (key, ts, delta, job_id),
                    )
                    added = max(added, delta)
            if final and attached:
                conn.execute("UPDATE job_budgets SET settled = 1 WHERE job_id = ?", (job_id,))
        return added

    def budget_used(self, budget_key: str, window: float, now: float | None = None) -> float:
        """What was charged to a budget in the window ending now."""
        since = (time.time() if now is None else now) - window
        row = self.db.query_one(
            "SELECT coalesce(sum(amount), 0) FROM budget_charges WHERE budget_key = ? AND ts > ?",
            (budget_key, since),
        )
        return float(row[0]) if row is not None else 0.0

    def prune_budget_charges(self, now: float) -> int:
        """Drop charges older than the longest window of any budget that holds them, once
        their jobs are settled."""
        with self.db.transaction(immediate=True) as conn:
            return conn.execute(
                "DELETE FROM budget_charges WHERE ts <= ? - coalesce((SELECT max(window) FROM"
                " job_budgets b WHERE b.budget_key = budget_charges.budget_key), 0)"
                " AND NOT EXISTS (SELECT 1 FROM job_budgets o WHERE o.job_id ="
                " budget_charges.job_id AND o.settled = 0)",
                (now,),
            ).rowcount

"""Charging budgets: each job's usage goes to the budgets it was admitted under.

The policy engine admits a job while its budgets have room and names them in the decision; the
gateway attaches them to the job (``attach``), and this ledger brings the job's charges up to
its usage whenever the runtime reports a change of the job: while it runs (usage the CLI
reports early is stored with its events) and once more when it ends, which settles it. Charges
are durable and exact (``LimitStore.charge_job`` reads what was charged in the same write
transaction), so a restart, a resync or a repeated change never charges a figure twice; on
start the ledger catches up with every job that was still open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Iterable

from llmgw_jupyter.runtime import Runtime
from llmgw_jupyter.runtime.notifier import ChangeSubscription
from llmgw_jupyter.store.limits import BudgetCheck, LimitStore

log = logging.getLogger(__name__)


class BudgetLedger:
    """Follows the runtime's job changes and charges the jobs that have budgets."""

    def __init__(self, runtime: Runtime, store: LimitStore) -> None:
        self.runtime = runtime
        self.store = store
        self._open: set[str] = set()
        self._subscription: ChangeSubscription | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Catch up with the jobs still open in the store, then follow every change."""
        if self._task is not None:
            return
        self._subscription = self.runtime.subscribe()
        self._open.update(self.store.open_budget_jobs())
        for job_id in list(self._open):
            self.charge(job_id)
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="llmgw-budgets")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    def attach(self, job_id: str, budgets: Iterable[BudgetCheck]) -> None:
        """Charge ``job_id`` to ``budgets`` from now on (what it used so far is charged now)."""
        checks = tuple(budgets)
        if not checks:
            return
        self.store.attach_budgets(job_id, checks)
        self._open.add(job_id)
        self.charge(job_id)

    def charge(self, job_id: str) -> None:
        """Bring the job's charges up to its usage; settle it once it has ended."""
        record = self.runtime.get(job_id)
        try:
            if record is None:  # pruned: nothing more will be reported
                self.store.charge_job(job_id, 0, None, final=True)
                self._open.discard(job_id)
                return
            usage = record.usage
            final = record.is_terminal
            self.store.charge_job(job_id, usage.total_tokens, usage.cost_usd, final=final)
        except sqlite3.OperationalError:  # a busy or full store: the next change retries
            log.warning("llmgw: could not charge job %s to its budgets", job_id, exc_info=True)
            return
        if final:
            self._open.discard(job_id)

    async def _follow(self) -> None:
        assert self._subscription is not None
        async for change in self._subscription:
            if change.is_resync:
                for job_id in list(self._open):
                    self.charge(job_id)
            elif change.job_id in self._open:
                self.charge(change.job_id)

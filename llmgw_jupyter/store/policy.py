"""SQL for the policy layer: rate-limit hits, approvals, the audit log and grants.

Rate limits are a sliding log of admitted hits: a call is admitted only if, inside one
``BEGIN IMMEDIATE`` transaction, every limit still has room; then one hit per counter is inserted.
Being in SQLite, counters are exact across threads and processes, survive restarts and do not
care about policy reloads.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from llmgw_jupyter.errors import ErrorCategory, GatewayError, InvalidInputError
from llmgw_jupyter.store.db import Database

APPROVAL_STATUSES = ("pending", "approved", "denied", "expired")
"""Every state of an approval request (the ``status`` column); a listing asks for one of them."""


def _known_approval_status(status: str) -> str:
    if status not in APPROVAL_STATUSES:
        *most, last = APPROVAL_STATUSES
        raise InvalidInputError("status", f"must be {', '.join(most)} or {last}")
    return status


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 kept: the same arguments always give the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_args_hash(args: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of the arguments; the audit keeps this, not values."""
    return hashlib.sha256(canonical_json(args).encode("utf-8")).hexdigest()


def hash_token(token: str) -> str:
    """Grants are looked up by the SHA-256 of their token; the token itself is never stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


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


# -- approvals --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApprovalRecord:
    id: str
    caller: str
    tool: str
    arguments: dict[str, Any]
    job_id: str | None
    status: str
    created_at: float
    expires_at: float
    decided_by: str | None
    decided_at: float | None
    reason: str | None
    reservation: tuple[int, ...]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ApprovalRecord:
        return cls(
            id=row["id"],
            caller=row["caller"],
            tool=row["tool"],
            arguments=json.loads(row["arguments_json"]),
            job_id=row["job_id"],
            status=row["status"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            decided_by=row["decided_by"],
            decided_at=row["decided_at"],
            reason=row["reason"],
            reservation=tuple(json.loads(row["reservation_json"])),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "caller": self.caller,
            "tool": self.tool,
            "arguments": self.arguments,
            "job_id": self.job_id,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "decided_by": self.decided_by,
            "decided_at": _iso(self.decided_at),
            "reason": self.reason,
        }


# -- audit ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditRecord:
    id: int
    ts: float
    caller: str
    tool: str
    decision: str
    rule: str
    message: str
    arg_keys: list[str]
    args_sha256: str
    approval_id: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> AuditRecord:
        return cls(
            id=row["id"],
            ts=row["ts"],
            caller=row["caller"],
            tool=row["tool"],
            decision=row["decision"],
            rule=row["rule"],
            message=row["message"],
            arg_keys=json.loads(row["arg_keys_json"]),
            args_sha256=row["args_sha256"],
            approval_id=row["approval_id"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": _iso(self.ts),
            "caller": self.caller,
            "tool": self.tool,
            "decision": self.decision,
            "rule": self.rule,
            "message": self.message,
            "arg_keys": self.arg_keys,
            "args_sha256": self.args_sha256,
            "approval_id": self.approval_id,
        }


# -- grants -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GrantRecord:
    name: str
    token_sha256: str
    policy: dict[str, Any] | None
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> GrantRecord:
        policy = row["policy_json"]
        return cls(
            name=row["name"],
            token_sha256=row["token_sha256"],
            policy=json.loads(policy) if policy is not None else None,
            created_at=row["created_at"],
            revoked_at=row["revoked_at"],
        )

    def to_dict(self) -> dict[str, Any]:
        """The public view: the token hash stays inside."""
        return {
            "name": self.name,
            "policy": self.policy,
            "created_at": _iso(self.created_at),
            "revoked_at": _iso(self.revoked_at),
            "active": self.active,
        }


class PolicyStore:
    """Every SQL statement of the policy layer."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Bumped by every grant write made through this store: with the database's
        # data_version (other processes' writes) it tells caches of grant rows they are stale.
        self.grants_generation = 0
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
        is ``retry_after`` seconds away."""
        with self.db.transaction() as conn:
            now = clock()
            for index, check in enumerate(checks):
                since = now - check.window
                row = conn.execute(
                    "SELECT coalesce(sum(amount), 0) FROM budget_charges"
                    " WHERE budget_key = ? AND ts > ?",
                    (check.budget_key, since),
                ).fetchone()
                used = float(row[0])
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

    # -- approvals ----------------------------------------------------------------------------
    def create_approval(
        self,
        caller: str,
        tool: str,
        arguments: Mapping[str, Any],
        timeout_seconds: float,
        *,
        job_id: str | None = None,
        reservation: Iterable[int] = (),
        now: float | None = None,
    ) -> ApprovalRecord:
        """A pending request; ``reservation`` keeps rate-limit hits to give back on denial."""
        created = time.time() if now is None else now
        approval_id = "apr_" + secrets.token_hex(8)
        self.db.execute(
            "INSERT INTO approvals (id, caller, tool, arguments_json, job_id, status, created_at,"
            " expires_at, reservation_json) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
            (
                approval_id,
                caller,
                tool,
                canonical_json(dict(arguments)),
                job_id,
                created,
                created + timeout_seconds,
                json.dumps(list(reservation)),
            ),
        )
        record = self.get_approval(approval_id)
        assert record is not None
        return record

    def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        row = self.db.query_one("SELECT * FROM approvals WHERE id = ?", (approval_id,))
        return ApprovalRecord.from_row(row) if row is not None else None

    def pending_approvals_for_job(self, job_id: str) -> list[ApprovalRecord]:
        rows = self.db.query(
            "SELECT * FROM approvals WHERE job_id = ? AND status = 'pending'", (job_id,)
        )
        return [ApprovalRecord.from_row(r) for r in rows]

    def list_approvals(
        self,
        status: str | None = "pending",
        caller: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ApprovalRecord]:
        """Newest first; ``status=None`` lists every status."""
        if status is not None:
            _known_approval_status(status)
        where, params = _filters({"status": status, "caller": caller})
        rows = self.db.query(
            f"SELECT * FROM approvals{where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [ApprovalRecord.from_row(r) for r in rows]

    def count_approvals(self, status: str = "pending") -> int:
        row = self.db.query_one(
            "SELECT count(*) FROM approvals WHERE status = ?", (_known_approval_status(status),)
        )
        return int(row[0]) if row is not None else 0

    def set_approval_job(self, approval_id: str, job_id: str) -> None:
        self.db.execute("UPDATE approvals SET job_id = ? WHERE id = ?", (job_id, approval_id))

    def decide_approval(
        self,
        approval_id: str,
        approved: bool,
        decided_by: str,
        reason: str | None = None,
        now: float | None = None,
    ) -> tuple[ApprovalRecord, bool] | None:
        """Approve or deny a pending request: ``(record, changed)``; None when unknown.

        ``changed`` is False when the request was already decided or had expired (an expired one
        is marked ``expired`` here, so a late approval never starts work).
        """
        at = time.time() if now is None else now
        with self.db.transaction(immediate=True) as conn:
            row = conn.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
            if row is None:
                return None
            changed = False
            if row["status"] == "pending":
                if row["expires_at"] <= at:
                    conn.execute(
                        "UPDATE approvals SET status = 'expired', decided_at = ?, reason = ?"
                        " WHERE id = ?",
                        (row["expires_at"], "approval timed out", approval_id),
                    )
                else:
                    conn.execute(
                        "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?,"
                        " reason = ? WHERE id = ?",
                        ("approved" if approved else "denied", decided_by, at, reason, approval_id),
                    )
                    changed = True
            row = conn.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        return ApprovalRecord.from_row(row), changed

    def expire_approvals(self, now: float | None = None) -> list[ApprovalRecord]:
        """Mark every pending request past its expiry as ``expired`` and return them."""
        at = time.time() if now is None else now
        with self.db.transaction(immediate=True) as conn:
            rows = conn.execute(
                "SELECT id FROM approvals WHERE status = 'pending' AND expires_at <= ?", (at,)
            ).fetchall()
            ids = [r["id"] for r in rows]
            if not ids:
                return []
            marks = ", ".join("?" for _ in ids)
            conn.execute(
                "UPDATE approvals SET status = 'expired', decided_at = expires_at,"
                f" reason = 'approval timed out' WHERE id IN ({marks})",
                ids,
            )
            rows = conn.execute(
                f"SELECT * FROM approvals WHERE id IN ({marks}) ORDER BY expires_at", ids
            ).fetchall()
        return [ApprovalRecord.from_row(r) for r in rows]

    def next_approval_expiry(self) -> float | None:
        """When the next pending request expires, so a waiter can sleep until exactly then."""
        row = self.db.query_one("SELECT min(expires_at) FROM approvals WHERE status = 'pending'")
        return float(row[0]) if row is not None and row[0] is not None else None

    # -- audit --------------------------------------------------------------------------------
    def add_audit(
        self,
        caller: str,
        tool: str,
        decision: str,
        *,
        rule: str = "",
        message: str = "",
        args: Mapping[str, Any] | None = None,
        approval_id: str | None = None,
        ts: float | None = None,
    ) -> int:
        """Record a decision: argument keys and a hash of the arguments, never their values."""
        arguments = dict(args or {})
        cursor = self.db.execute(
            "INSERT INTO audit (ts, caller, tool, decision, rule, message, arg_keys_json,"
            " args_sha256, approval_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                time.time() if ts is None else ts,
                caller,
                tool,
                decision,
                rule,
                message,
                json.dumps(sorted(arguments)),
                canonical_args_hash(arguments),
                approval_id,
            ),
        )
        return int(cursor.lastrowid or 0)

    def query_audit(
        self,
        *,
        caller: str | None = None,
        tool: str | None = None,
        decision: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[AuditRecord]:
        """Newest first, filtered by exact caller/tool/decision and a time range."""
        where, params = _filters({"caller": caller, "tool": tool, "decision": decision})
        if since is not None:
            where += (" AND" if where else " WHERE") + " ts >= ?"
            params.append(since)
        if until is not None:
            where += (" AND" if where else " WHERE") + " ts < ?"
            params.append(until)
        rows = self.db.query(
            f"SELECT * FROM audit{where} ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [AuditRecord.from_row(r) for r in rows]

    def prune_audit(self, older_than: float) -> int:
        """Retention: delete records before ``older_than`` (epoch seconds)."""
        with self.db.transaction(immediate=True) as conn:
            return conn.execute("DELETE FROM audit WHERE ts < ?", (older_than,)).rowcount

    # -- grants -------------------------------------------------------------------------------
    def create_grant(
        self,
        name: str,
        token_sha256: str,
        policy: Mapping[str, Any] | None,
        now: float | None = None,
    ) -> GrantRecord:
        """A new grant; names are never reused (a revoked name still owns its jobs)."""
        self.grants_generation += 1
        with self.db.transaction(immediate=True) as conn:
            if conn.execute("SELECT 1 FROM grants WHERE name = ?", (name,)).fetchone():
                raise GatewayError(
                    ErrorCategory.CONFLICT, f"grant {name!r} already exists", field="name"
                )
            conn.execute(
                "INSERT INTO grants (name, token_sha256, policy_json, created_at)"
                " VALUES (?, ?, ?, ?)",
                (
                    name,
                    token_sha256,
                    None if policy is None else canonical_json(dict(policy)),
                    time.time() if now is None else now,
                ),
            )
            row = conn.execute("SELECT * FROM grants WHERE name = ?", (name,)).fetchone()
        return GrantRecord.from_row(row)

    def get_grant(self, name: str) -> GrantRecord | None:
        row = self.db.query_one("SELECT * FROM grants WHERE name = ?", (name,))
        return GrantRecord.from_row(row) if row is not None else None

    def list_grants(self, include_revoked: bool = True) -> list[GrantRecord]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        rows = self.db.query(f"SELECT * FROM grants{where} ORDER BY created_at, name")
        return [GrantRecord.from_row(r) for r in rows]

    def revoke_grant(self, name: str, now: float | None = None) -> bool:
        """True when an active grant was revoked."""
        self.grants_generation += 1
        cursor = self.db.execute(
            "UPDATE grants SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
            (time.time() if now is None else now, name),
        )
        return cursor.rowcount == 1

    def count_revoked_grants(self) -> int:
        """How many grants are revoked: a cheap check for revocations by another process."""
        row = self.db.query_one("SELECT count(*) FROM grants WHERE revoked_at IS NOT NULL")
        return int(row[0]) if row is not None else 0

    def revoked_grant_names(self) -> list[str]:
        rows = self.db.query(
            "SELECT name FROM grants WHERE revoked_at IS NOT NULL ORDER BY revoked_at, name"
        )
        return [row["name"] for row in rows]

    def set_grant_policy(self, name: str, policy: Mapping[str, Any] | None) -> bool:
        self.grants_generation += 1
        cursor = self.db.execute(
            "UPDATE grants SET policy_json = ? WHERE name = ?",
            (None if policy is None else canonical_json(dict(policy)), name),
        )
        return cursor.rowcount == 1

    def grant_by_token_hash(self, token_sha256: str) -> GrantRecord | None:
        """The active grant holding this token, if any."""
        row = self.db.query_one(
            "SELECT * FROM grants WHERE token_sha256 = ? AND revoked_at IS NULL", (token_sha256,)
        )
        return GrantRecord.from_row(row) if row is not None else None


def _filters(equal: dict[str, Any]) -> tuple[str, list[Any]]:
    """``WHERE a = ? AND b = ?`` for the filters that are set (column names are ours)."""
    used = {column: value for column, value in equal.items() if value is not None}
    if not used:
        return "", []
    return " WHERE " + " AND ".join(f"{c} = ?" for c in used), list(used.values())

"""SQL of approval requests: created pending, decided once (or expired), listed newest first."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llmgw_jupyter.errors import InvalidInputError
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.values import canonical_json, equality_filters, iso_time

APPROVAL_STATUSES = ("pending", "approved", "denied", "expired")
"""Every state of an approval request (the ``status`` column); a listing asks for one of them."""


def _known_approval_status(status: str) -> str:
    if status not in APPROVAL_STATUSES:
        *most, last = APPROVAL_STATUSES
        raise InvalidInputError("status", f"must be {', '.join(most)} or {last}")
    return status


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
            "created_at": iso_time(self.created_at),
            "expires_at": iso_time(self.expires_at),
            "decided_by": self.decided_by,
            "decided_at": iso_time(self.decided_at),
            "reason": self.reason,
        }


class ApprovalStore:
    """Every SQL statement of approval requests."""

    def __init__(self, db: Database) -> None:
        self.db = db

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
        where, params = equality_filters({"status": status, "caller": caller})
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

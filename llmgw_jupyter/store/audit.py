"""SQL of the audit log: one row per decision, with argument keys and a hash, never values."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.values import canonical_args_hash, equality_filters, iso_time


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
            "ts": iso_time(self.ts),
            "caller": self.caller,
            "tool": self.tool,
            "decision": self.decision,
            "rule": self.rule,
            "message": self.message,
            "arg_keys": self.arg_keys,
            "args_sha256": self.args_sha256,
            "approval_id": self.approval_id,
        }


class AuditStore:
    """Every SQL statement of the audit log."""

    def __init__(self, db: Database) -> None:
        self.db = db

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
        where, params = equality_filters({"caller": caller, "tool": tool, "decision": decision})
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

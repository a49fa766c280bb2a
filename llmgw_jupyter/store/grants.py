"""SQL of grants: named credentials for external agents, found by the hash of their token."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmgw_jupyter.errors import ErrorCategory, GatewayError
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.values import canonical_json, iso_time


def hash_token(token: str) -> str:
    """Grants are looked up by the SHA-256 of their token; the token itself is never stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


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
            "created_at": iso_time(self.created_at),
            "revoked_at": iso_time(self.revoked_at),
            "active": self.active,
        }


class GrantStore:
    """Every SQL statement of grants."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Bumped by every grant write made through this store: with the database's
        # data_version (other processes' writes) it tells caches of grant rows they are stale.
        self.grants_generation = 0

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

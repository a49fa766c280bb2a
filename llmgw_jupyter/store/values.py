"""Values the policy-layer stores share: canonical JSON, hashes, ISO times, equality filters."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 kept: the same arguments always give the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_args_hash(args: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of the arguments; the audit keeps this, not values."""
    return hashlib.sha256(canonical_json(args).encode("utf-8")).hexdigest()


def iso_time(ts: float | None) -> str | None:
    """Epoch seconds as the ISO 8601 text (UTC, milliseconds) of every public view."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


def equality_filters(equal: dict[str, Any]) -> tuple[str, list[Any]]:
    """``WHERE a = ? AND b = ?`` for the filters that are set (column names are ours)."""
    used = {column: value for column, value in equal.items() if value is not None}
    if not used:
        return "", []
    return " WHERE " + " AND ".join(f"{c} = ?" for c in used), list(used.values())

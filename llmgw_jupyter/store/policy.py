"""``PolicyStore``: the four stores of the policy layer as one object over one database.

Why it exists: the gateway hands one ``store`` to its adapters (REST lists approvals, grants and
the audit through it), and the policy tests and CLI open all four tables at once. Code that
needs one table takes its own store instead: ``LimitStore`` (rate limits and budgets),
``ApprovalStore``, ``AuditStore`` or ``GrantStore``. A ``PolicyStore`` is each of them, so it can
be passed wherever one is asked for, with one set of caches (grant generation, known windows).
"""

from __future__ import annotations

from llmgw_jupyter.store.approvals import ApprovalStore
from llmgw_jupyter.store.audit import AuditStore
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.grants import GrantStore
from llmgw_jupyter.store.limits import LimitStore


class PolicyStore(LimitStore, ApprovalStore, AuditStore, GrantStore):
    """Rate limits, budgets, approvals, the audit log and grants on one ``Database``."""

    def __init__(self, db: Database) -> None:
        LimitStore.__init__(self, db)
        ApprovalStore.__init__(self, db)
        AuditStore.__init__(self, db)
        GrantStore.__init__(self, db)


__all__ = ["ApprovalStore", "AuditStore", "GrantStore", "LimitStore", "PolicyStore"]

"""The stores the gateway builds on (approvals, audit, grants), through the PolicyStore facade."""

from __future__ import annotations

import hashlib
import json

import pytest

from llmgw_jupyter.errors import ErrorCategory, GatewayError
from llmgw_jupyter.store.approvals import APPROVAL_STATUSES
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.grants import hash_token
from llmgw_jupyter.store.policy import PolicyStore
from llmgw_jupyter.store.values import canonical_args_hash


def test_canonical_args_hash_ignores_key_order_and_spacing() -> None:
    a = {"prompt": "héllo", "opts": {"b": 1, "a": [1, 2]}}
    b = {"opts": {"a": [1, 2], "b": 1}, "prompt": "héllo"}
    assert canonical_args_hash(a) == canonical_args_hash(b)
    expected = hashlib.sha256('{"opts":{"a":[1,2],"b":1},"prompt":"héllo"}'.encode()).hexdigest()
    assert canonical_args_hash(a) == expected
    assert canonical_args_hash({"x": 1}) != canonical_args_hash({"x": "1"})


class TestApprovals:
    def test_create_list_and_approve(self, store: PolicyStore) -> None:
        record = store.create_approval(
            "grant:ci", "codex_fork_session", {"prompt": "p"}, 600.0, reservation=[4, 5], now=100.0
        )
        assert record.status == "pending" and record.expires_at == 700.0
        assert record.reservation == (4, 5) and record.arguments == {"prompt": "p"}
        store.set_approval_job(record.id, "job-1")
        assert [a.id for a in store.list_approvals()] == [record.id]
        assert store.count_approvals() == 1
        assert store.next_approval_expiry() == 700.0
        result = store.decide_approval(record.id, True, "owner", now=200.0)
        assert result is not None
        decided, changed = result
        assert changed and decided.status == "approved" and decided.decided_by == "owner"
        assert decided.decided_at == 200.0 and decided.job_id == "job-1"
        assert store.list_approvals() == [] and store.next_approval_expiry() is None
        again = store.decide_approval(record.id, False, "owner", now=201.0)
        assert again is not None and again[1] is False and again[0].status == "approved"
        view = decided.to_dict()
        assert view["status"] == "approved" and view["created_at"].endswith("+00:00")
        assert set(view) >= {"id", "caller", "tool", "arguments", "job_id", "expires_at"}

    def test_deny_with_reason(self, store: PolicyStore) -> None:
        record = store.create_approval("grant:ci", "t", {}, 60.0, now=0.0)
        result = store.decide_approval(record.id, False, "owner", reason="not today", now=1.0)
        assert result is not None and result[1]
        assert (result[0].status, result[0].reason) == ("denied", "not today")

    def test_late_decision_expires_instead(self, store: PolicyStore) -> None:
        record = store.create_approval("grant:ci", "t", {}, 60.0, now=0.0)
        result = store.decide_approval(record.id, True, "owner", now=60.0)
        assert result is not None
        assert result[1] is False and result[0].status == "expired"

    def test_expire_sweep_and_unknown(self, store: PolicyStore) -> None:
        soon = store.create_approval("grant:a", "t", {}, 10.0, reservation=[9], now=0.0)
        later = store.create_approval("grant:b", "t", {}, 100.0, now=0.0)
        expired = store.expire_approvals(now=50.0)
        assert [a.id for a in expired] == [soon.id]
        assert expired[0].status == "expired" and expired[0].reservation == (9,)
        assert store.expire_approvals(now=50.0) == []
        assert [a.id for a in store.list_approvals(status=None)] != []
        assert {a.id for a in store.list_approvals(status="pending")} == {later.id}
        assert [a.id for a in store.list_approvals(status=None, caller="grant:a")] == [soon.id]
        assert store.decide_approval("nope", True, "owner") is None
        assert store.get_approval("nope") is None

    def test_listing_an_unknown_status_is_refused_by_name(self, store: PolicyStore) -> None:
        rule = "status: must be pending, approved, denied or expired"
        with pytest.raises(GatewayError, match=rule) as refused:
            store.list_approvals(status="aproved")
        assert refused.value.category is ErrorCategory.INVALID_INPUT
        assert refused.value.field == "status"
        with pytest.raises(GatewayError, match=rule):
            store.count_approvals("all")
        assert {
            status: store.count_approvals(status) for status in APPROVAL_STATUSES
        } == dict.fromkeys(APPROVAL_STATUSES, 0)


class TestAudit:
    def test_records_keys_and_hash_never_values(self, store: PolicyStore, db: Database) -> None:
        args = {"prompt": "SECRET-VALUE", "sandbox": "read-only"}
        store.add_audit(
            "grant:ci",
            "codex_request",
            "deny",
            rule="/tools/codex_request/action",
            message="use the async tool",
            args=args,
            ts=10.0,
        )
        (record,) = store.query_audit()
        assert record.arg_keys == ["prompt", "sandbox"]
        assert record.args_sha256 == canonical_args_hash(args)
        assert record.rule == "/tools/codex_request/action"
        dump = json.dumps([list(r) for r in db.query("SELECT * FROM audit")])
        assert "SECRET-VALUE" not in dump
        assert record.to_dict()["ts"] == "1970-01-01T00:00:10.000+00:00"

    def test_filters_paging_and_retention(self, store: PolicyStore) -> None:
        for i in range(10):
            store.add_audit(
                "owner" if i % 2 else "grant:ci",
                f"tool{i % 3}",
                "allow" if i % 4 else "deny",
                args={"i": i},
                ts=float(i),
            )
        assert [r.ts for r in store.query_audit(limit=3)] == [9.0, 8.0, 7.0]
        assert [r.ts for r in store.query_audit(limit=3, offset=3)] == [6.0, 5.0, 4.0]
        assert {r.caller for r in store.query_audit(caller="owner")} == {"owner"}
        assert [r.ts for r in store.query_audit(tool="tool0")] == [9.0, 6.0, 3.0, 0.0]
        assert [r.ts for r in store.query_audit(decision="deny")] == [8.0, 4.0, 0.0]
        assert [r.ts for r in store.query_audit(since=7.0)] == [9.0, 8.0, 7.0]
        assert [r.ts for r in store.query_audit(caller="grant:ci", until=4.0)] == [2.0, 0.0]
        assert store.prune_audit(older_than=5.0) == 5
        assert len(store.query_audit()) == 5


class TestGrants:
    def test_create_lookup_revoke(self, store: PolicyStore) -> None:
        token_hash = hash_token("s3cret")
        grant = store.create_grant("ci", token_hash, {"version": "1"}, now=1.0)
        assert grant.active and grant.policy == {"version": "1"}
        assert "token_sha256" not in grant.to_dict()
        found = store.grant_by_token_hash(hash_token("s3cret"))
        assert found is not None and found.name == "ci"
        assert store.grant_by_token_hash(hash_token("other")) is None
        assert store.revoke_grant("ci", now=2.0) is True
        assert store.revoke_grant("ci") is False
        assert store.grant_by_token_hash(token_hash) is None
        revoked = store.get_grant("ci")
        assert revoked is not None and not revoked.active and revoked.revoked_at == 2.0
        assert store.list_grants(include_revoked=False) == []
        assert [g.name for g in store.list_grants()] == ["ci"]

    def test_names_are_never_reused(self, store: PolicyStore) -> None:
        store.create_grant("ci", hash_token("a"), None)
        store.revoke_grant("ci")
        with pytest.raises(GatewayError) as info:
            store.create_grant("ci", hash_token("b"), None)
        assert info.value.category is ErrorCategory.CONFLICT

    def test_grant_without_policy_and_policy_update(self, store: PolicyStore) -> None:
        store.create_grant("bare", hash_token("t"), None)
        bare = store.get_grant("bare")
        assert bare is not None and bare.policy is None
        assert store.set_grant_policy("bare", {"version": "1", "default": "allow"})
        updated = store.get_grant("bare")
        assert updated is not None and updated.policy == {"version": "1", "default": "allow"}
        assert store.set_grant_policy("missing", None) is False

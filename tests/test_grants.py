"""Grants: named credentials for external agents, each with its own policy.

A token is shown once; the store keeps only its SHA-256. Revoking a grant stops its token at the
next request. Names are never reused, so a revoked name keeps owning its jobs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tools.gateway_harness import Harness, open_gateway

from llmgw_jupyter import grants
from llmgw_jupyter.errors import GatewayError
from llmgw_jupyter.gateway import grant_policies
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.grants import GrantStore
from llmgw_jupyter.store.policy import PolicyStore
from llmgw_jupyter.tools import Caller

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {"llm_job_list": {}, "codex_request": {"action": "deny", "reason": "async only"}},
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PolicyStore]:
    db = Database(tmp_path / "store.sqlite3")
    yield PolicyStore(db)
    db.close()


@pytest.fixture
async def fake_gateway(tmp_path: Path) -> AsyncIterator[Harness]:
    async with open_gateway(tmp_path, fake=True) as harness:
        yield harness


def test_a_new_grant_gets_a_token_that_is_stored_only_as_its_hash(
    store: PolicyStore, tmp_path: Path
) -> None:
    record, token = grants.create_grant(store, "ci-bot", POLICY)
    assert token.startswith(grants.TOKEN_PREFIX)
    assert len(token) >= len(grants.TOKEN_PREFIX) + 40  # 32 random bytes, url-safe
    assert record.name == "ci-bot"
    assert record.active
    assert record.policy == POLICY
    assert record.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    rows = store.db.query("SELECT * FROM grants")
    assert token not in json.dumps([dict(r) for r in rows])
    assert "token" not in json.dumps(record.to_dict())
    assert record.to_dict()["policy"] == POLICY


def test_tokens_are_unique(store: PolicyStore) -> None:
    tokens = {grants.create_grant(store, f"g{n}", None)[1] for n in range(20)}
    assert len(tokens) == 20


def test_a_token_opens_its_own_grant_only_until_revoked(store: PolicyStore) -> None:
    _, first = grants.create_grant(store, "first", POLICY)
    _, second = grants.create_grant(store, "second", None)
    found = grants.grant_for_token(store, first)
    assert found is not None and found.name == "first"
    assert grants.grant_for_token(store, second).name == "second"  # type: ignore[union-attr]
    grants.revoke_grant(store, "first")
    assert grants.grant_for_token(store, first) is None
    assert grants.grant_for_token(store, second) is not None


@pytest.mark.parametrize(
    "token",
    ["", "llmgw_", "llmgw_wrong", "not-a-token", "Bearer llmgw_x"],
)
def test_unknown_tokens_open_nothing(store: PolicyStore, token: str) -> None:
    grants.create_grant(store, "real", POLICY)
    assert grants.grant_for_token(store, token) is None


def test_the_hash_of_a_token_without_the_prefix_opens_nothing(store: PolicyStore) -> None:
    record, token = grants.create_grant(store, "real", POLICY)
    assert grants.grant_for_token(store, record.token_sha256) is None
    assert grants.grant_for_token(store, token.removeprefix(grants.TOKEN_PREFIX)) is None


@pytest.mark.parametrize(
    "name",
    [
        *("", "-x", "_x", ".hidden", "a b", "a/b", "../x", "grant:x", "x" * 65, "naïve"),
        *("Agent", "CON", "a.b", "a\n", "a\x00", "\uff41"),  # case, dots, newline, NUL, width
    ],
)
def test_grant_names_are_checked(store: PolicyStore, name: str) -> None:
    with pytest.raises(GatewayError) as refused:
        grants.create_grant(store, name, POLICY)
    assert refused.value.category.value == "invalid_input"
    assert refused.value.field == "name"
    assert refused.value.message.startswith("name: must be 1-64 lowercase letters a-z, digits")
    assert store.list_grants() == []


@pytest.mark.parametrize("name", ["a", "0", "a1", "ci_bot-2_prod", "x" * 64])
def test_good_grant_names_are_accepted(store: PolicyStore, name: str) -> None:
    record, _ = grants.create_grant(store, name, None)
    assert record.name == name


def test_names_are_never_reused_even_after_revocation(store: PolicyStore) -> None:
    grants.create_grant(store, "agent", POLICY)
    grants.revoke_grant(store, "agent")
    with pytest.raises(GatewayError) as taken:
        grants.create_grant(store, "agent", POLICY)
    assert taken.value.category.value == "conflict"
    assert taken.value.message == "grant 'agent' already exists"


def test_an_invalid_policy_is_refused_naming_the_pointer_and_rule(store: PolicyStore) -> None:
    bad = {
        "version": "1",
        "tools": {
            "codex_request_async": {"limits": [{"counter": "c", "window": "week", "max": 1}]}
        },
    }
    with pytest.raises(GatewayError) as refused:
        grants.create_grant(store, "agent", bad)
    assert refused.value.category.value == "invalid_input"
    assert refused.value.field == "policy"
    assert (
        "/tools/codex_request_async/limits/0/window: must be second, minute, hour, day or a "
        "positive number of seconds"
    ) in refused.value.message
    assert store.list_grants() == []


@pytest.mark.parametrize("policy", [[1, 2], "deny", 3, True])
def test_a_policy_that_is_not_an_object_is_refused(store: PolicyStore, policy: Any) -> None:
    with pytest.raises(GatewayError) as refused:
        grants.create_grant(store, "agent", policy)
    assert refused.value.category.value == "invalid_input"
    assert refused.value.field == "policy"
    assert refused.value.message == "policy: must be a JSON object (omit it for no policy)"


def test_revoking_is_idempotent_and_an_unknown_name_is_not_found(store: PolicyStore) -> None:
    grants.create_grant(store, "agent", POLICY)
    grants.revoke_grant(store, "agent")
    grants.revoke_grant(store, "agent")
    (record,) = store.list_grants()
    assert not record.active and record.revoked_at is not None
    with pytest.raises(GatewayError) as missing:
        grants.revoke_grant(store, "nobody")
    assert missing.value.category.value == "not_found"
    assert missing.value.field == "name"


# -- through the gateway --------------------------------------------------------------------------
async def test_the_gateway_maps_tokens_to_callers_until_revoked(fake_gateway: Harness) -> None:
    gw = fake_gateway.gateway
    record, token = gw.create_grant("agent", POLICY)
    assert record.name == "agent"
    assert gw.caller_for_token(token) == Caller.grant("agent")
    assert gw.caller_for_token(token + "x") is None
    gw.revoke_grant("agent")
    assert gw.caller_for_token(token) is None
    with pytest.raises(GatewayError):
        gw.revoke_grant("nobody")


async def test_a_grants_policy_decides_its_calls_and_a_changed_policy_takes_effect(
    fake_gateway: Harness,
) -> None:
    agent = fake_gateway.grant("agent", POLICY)
    assert [t.name for t in fake_gateway.gateway.list_tools(agent)] == ["llm_job_list"]
    denied = await fake_gateway.call("codex_request", {"prompt": "x"}, agent)
    assert denied.text.startswith("[POLICY DENIED] async only (rule: /tools/codex_request/action)")
    assert not (await fake_gateway.call("llm_job_list", {}, agent)).is_error

    fake_gateway.gateway.store.set_grant_policy("agent", {"version": "1", "default": "allow"})
    assert len(fake_gateway.gateway.list_tools(agent)) == len(fake_gateway.gateway.tools.names)
    assert not (await fake_gateway.call("llm_session_list", {}, agent)).is_error


async def test_a_stored_policy_that_no_longer_validates_fails_closed(
    fake_gateway: Harness,
) -> None:
    agent = fake_gateway.grant("agent", {"version": "1", "default": "allow"})
    fake_gateway.gateway.store.set_grant_policy("agent", {"version": "2", "default": "allow"})
    assert fake_gateway.gateway.list_tools(agent) == []
    result = await fake_gateway.call("llm_job_list", {}, agent)
    assert result.is_error
    assert result.text.startswith("[POLICY DENIED] no policy for this caller")


async def test_a_grant_created_with_a_non_object_policy_is_refused_by_the_gateway(
    fake_gateway: Harness,
) -> None:
    with pytest.raises(GatewayError) as refused:
        fake_gateway.gateway.create_grant("agent", ["not", "a", "policy"])  # type: ignore[arg-type]
    assert refused.value.field == "policy"
    assert fake_gateway.gateway.store.get_grant("agent") is None


async def test_a_policy_file_in_the_grant_policy_dir_wins_and_is_hot_reloaded(
    tmp_path: Path,
) -> None:
    policies = tmp_path / "grant-policies"
    policies.mkdir()
    async with open_gateway(tmp_path, fake=True, grant_policy_dir=policies) as harness:
        gateway = harness.gateway
        gateway.create_grant("ci", POLICY)  # stored policy: llm_job_list only
        gateway.create_grant("other", POLICY)
        ci, other = Caller.grant("ci"), Caller.grant("other")
        assert [t.name for t in gateway.list_tools(ci)] == ["llm_job_list"]

        file = policies / "ci.json"
        file.write_text(
            json.dumps({"version": "1", "default": "deny", "tools": {"llm_session_list": {}}})
        )
        assert [t.name for t in gateway.list_tools(ci)] == ["llm_session_list"]
        assert [t.name for t in gateway.list_tools(other)] == ["llm_job_list"], "no file: stored"
        denied = await gateway.call("llm_job_list", {}, ci)
        assert denied.is_error and denied.text.startswith("[POLICY DENIED]")

        file.write_text(
            json.dumps(
                {
                    "version": "1",
                    "default": "deny",
                    "tools": {"llm_job_list": {}, "llm_session_list": {}},
                }
            )
        )
        assert [t.name for t in gateway.list_tools(ci)] == ["llm_job_list", "llm_session_list"]

        file.write_text('{"version": "2"}')  # a bad edit keeps the last good policy
        assert [t.name for t in gateway.list_tools(ci)] == ["llm_job_list", "llm_session_list"]


async def test_a_grant_policy_file_that_never_loaded_refuses_everything(tmp_path: Path) -> None:
    policies = tmp_path / "grant-policies"
    policies.mkdir()
    (policies / "ci.json").write_text('{"version": "1", "default": "maybe"}')
    async with open_gateway(tmp_path, fake=True, grant_policy_dir=policies) as harness:
        harness.gateway.create_grant("ci", POLICY)
        assert harness.gateway.list_tools(Caller.grant("ci")) == []
        refused = await harness.gateway.call("llm_job_list", {}, Caller.grant("ci"))
        assert refused.is_error and refused.text.startswith("[POLICY DENIED]")


# -- a grant's record is cached: changes elsewhere are still seen at once ------------------------
ALLOW_ALL: dict[str, Any] = {"version": "1", "default": "allow"}


def revoke_elsewhere(harness: Harness, name: str) -> None:
    """What ``llmgw grant revoke`` does from another process: its own connection to the store."""
    other = Database(harness.tmp / "data" / "llmgw.sqlite3")
    try:
        grants.revoke_grant(GrantStore(other), name)
    finally:
        other.close()


async def test_a_grant_revoked_elsewhere_is_refused_at_its_next_call(
    fake_gateway: Harness,
) -> None:
    agent = fake_gateway.grant("agent", ALLOW_ALL)
    assert not (await fake_gateway.call("llm_job_list", {}, agent)).is_error  # now cached
    revoke_elsewhere(fake_gateway, "agent")
    refused = await fake_gateway.call("llm_job_list", {}, agent)
    assert refused.error == "policy_denied"  # a revoked grant has no policy


async def test_the_grants_version_changes_with_a_write_elsewhere_and_serves_the_next_call(
    fake_gateway: Harness,
) -> None:
    """The server's token check (``grants_version``) and the call it was made for share one
    look at SQLite; the check after the call (nothing revoked meanwhile?) is its own."""
    gw = fake_gateway.gateway
    agent = fake_gateway.grant("agent", ALLOW_ALL)
    assert not (await fake_gateway.call("llm_job_list", {}, agent)).is_error
    before = gw.grants_version()
    assert gw.grants_version() == before  # nothing changed
    revoke_elsewhere(fake_gateway, "agent")
    assert gw.grants_version() != before
    assert (await fake_gateway.call("llm_job_list", {}, agent)).error == "policy_denied"


async def test_a_request_checked_by_the_server_asks_sqlite_once_more_after_its_call(
    fake_gateway: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = fake_gateway.gateway
    agent = fake_gateway.grant("agent", ALLOW_ALL)
    assert not (await fake_gateway.call("llm_job_list", {}, agent)).is_error
    database = fake_gateway.runtime.database
    real = database.data_version
    asked: list[int] = []

    def counted() -> int:
        asked.append(1)
        return real()

    monkeypatch.setattr(database, "data_version", counted)
    gw.grants_version()  # the server authenticating the request
    assert not (await fake_gateway.call("llm_job_list", {}, agent)).is_error
    assert len(asked) == 2  # the token check, then the check after the call
    assert not (await fake_gateway.call("llm_job_list", {}, agent)).is_error
    assert len(asked) == 4  # unchecked by a server: the call asks before and after


async def test_a_server_check_older_than_its_bound_is_not_trusted(
    fake_gateway: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = fake_gateway.gateway
    agent = fake_gateway.grant("agent", ALLOW_ALL)
    assert not (await fake_gateway.call("llm_job_list", {}, agent)).is_error
    monkeypatch.setattr(grant_policies, "CHECK_REUSE_SECONDS", -1.0)  # every check is too old
    gw.grants_version()
    revoke_elsewhere(fake_gateway, "agent")  # after the check: only a check of its own sees it
    assert (await fake_gateway.call("llm_job_list", {}, agent)).error == "policy_denied"

"""Grants: named credentials for external agents, each with its own policy.

Shared by the ``llmgw grant`` command (works while a server runs: SQLite WAL) and the REST API.
Only a SHA-256 of each token is stored; the token is shown once, at creation.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from llmgw_jupyter.errors import ErrorCategory, GatewayError, InvalidInputError
from llmgw_jupyter.policy import PolicyValidationError, load_policy
from llmgw_jupyter.store.grants import GrantRecord, GrantStore, hash_token
from llmgw_jupyter.tools.context import GRANT_NAME_RE

TOKEN_PREFIX = "llmgw_"


def create_grant(
    store: GrantStore, name: str, policy: Mapping[str, Any] | None
) -> tuple[GrantRecord, str]:
    """Create a grant and return it with its token (the only time the token is visible)."""
    if not isinstance(name, str) or not GRANT_NAME_RE.fullmatch(name):
        raise InvalidInputError(
            "name",
            "must be 1-64 lowercase letters a-z, digits, '_' or '-', starting with a letter or "
            "digit (it names files and directories)",
        )
    if policy is not None:
        if not isinstance(policy, Mapping):  # JSON from a file or a request may be anything
            raise InvalidInputError("policy", "must be a JSON object (omit it for no policy)")
        try:
            load_policy(dict(policy), f"grant {name}")
        except PolicyValidationError as error:
            raise GatewayError(ErrorCategory.INVALID_INPUT, str(error), field="policy") from None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = store.create_grant(name, hash_token(token), policy)
    return record, token


def revoke_grant(store: GrantStore, name: str) -> None:
    if not store.revoke_grant(name):
        grant = store.get_grant(name)
        if grant is None:
            raise GatewayError(ErrorCategory.NOT_FOUND, f"grant {name!r} not found", field="name")


def grant_for_token(store: GrantStore, token: str) -> GrantRecord | None:
    """The active grant this token opens; revoked tokens stop working on the next request."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    return store.grant_by_token_hash(hash_token(token))

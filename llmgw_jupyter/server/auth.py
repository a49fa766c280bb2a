"""Credentials the server extension accepts, and where each one is valid.

- The Jupyter server's own token: the owner, on the MCP endpoint (Jupyter's own auth covers the
  REST API).
- A grant token (``llmgw_...``): one external agent, on the MCP endpoint only. Jupyter does not
  know these tokens, so they open no Jupyter endpoint (kernels, contents, ...) and no REST route.
- The per-server kernel token: the owner's code in kernels started by this server, on the llmgw
  REST API only (``Authorization: token <kernel token>``). Jupyter does not know it either.

Comparisons run in constant time; grant tokens are looked up by hash (``llmgw_jupyter.grants``).
``TokenCache`` keeps the answer of that lookup per token hash for the MCP endpoint's hot path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Generic, TypeVar

C = TypeVar("C")

KERNEL_TOKEN_PREFIX = "llmgwk_"
SERVER_URL_ENV = "LLMGW_SERVER_URL"
SERVER_TOKEN_ENV = "LLMGW_SERVER_TOKEN"
_SCHEMES = ("bearer", "token")


def presented_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <t>`` or ``Authorization: token <t>`` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in _SCHEMES or not token:
        return None
    return token


def same_token(presented: str | None, expected: str | None) -> bool:
    """Constant-time equality; an empty expected token never matches (auth disabled)."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def new_kernel_token() -> str:
    """A fresh random credential per server start: it dies with the server."""
    return KERNEL_TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    """SHA-256 of a token: the cache key, so no token is kept in memory as a key."""
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenCache(Generic[C]):
    """Callers of recently seen grant tokens, by token hash, valid while ``stamp()`` holds.

    Why: the MCP endpoint authenticates every request; the store lookup it replaces costs a
    hashed SQL query and a row parse. Only positive answers are kept (an unknown token always
    asks the store, so a new grant works at once and guessing fills nothing). Correctness under
    revocation rests on two things the owner of the cache must provide: ``clear()`` before a
    grant is revoked in this process, and a ``stamp`` that changes when another process may
    have changed the grants (SQLite's ``PRAGMA data_version``); a changed stamp empties the
    cache before the next lookup is answered. Bounded: it empties itself when ``limit`` is hit.
    """

    def __init__(
        self,
        lookup: Callable[[str], C | None],
        stamp: Callable[[], object],
        limit: int = 1024,
    ) -> None:
        self._lookup = lookup
        self._stamp = stamp
        self._limit = limit
        self._callers: dict[bytes, C] = {}
        self._valid_for: object = None

    def caller(self, token: str) -> C | None:
        """The caller this token opens now, or None."""
        stamp = self._stamp()
        if stamp != self._valid_for:
            self._callers.clear()
            self._valid_for = stamp
        key = token_digest(token)
        known = self._callers.get(key)
        if known is not None:
            return known
        found = self._lookup(token)
        if found is not None:
            if len(self._callers) >= self._limit:
                self._callers.clear()
            self._callers[key] = found
        return found

    def clear(self) -> None:
        self._callers.clear()

    def __len__(self) -> int:
        return len(self._callers)

"""Credentials the server extension accepts, and where each one is valid.

- The Jupyter server's own token: the owner, on the MCP endpoint (Jupyter's own auth covers the
  REST API).
- A grant token (``llmgw_...``): one external agent, on the MCP endpoint only. Jupyter does not
  know these tokens, so they open no Jupyter endpoint (kernels, contents, ...) and no REST route.
- The per-server kernel token: the owner's code in kernels started by this server, on the llmgw
  REST API only (``Authorization: token <kernel token>``). Jupyter does not know it either.

Comparisons run in constant time; grant tokens are looked up by hash (``llmgw_jupyter.grants``).
"""

from __future__ import annotations

import hmac
import secrets

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

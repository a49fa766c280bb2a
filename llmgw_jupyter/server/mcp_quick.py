"""A quick path for MCP tool calls that stream nothing: one JSON answer instead of an SSE response.

Why: profiling ``llm_job_status`` over the SDK's stateful transport (mcp 2.3.0) showed about 2 ms
of server CPU per call, two thirds of it in the SSE response machinery (sse-starlette task group,
per-request memory streams, the dispatcher's task spawning), not in the tool. The Streamable HTTP
spec lets a server answer any POSTed request with ``Content-Type: application/json`` (the client
must accept both); when a call asks for no progress there is nothing to stream, so the gateway is
called directly and its result written once.

Taken only when all of these hold; otherwise the SDK serves the request unchanged (the body is
replayed to it):
- a POST with ``Content-Type: application/json`` whose ``Accept`` includes ``application/json``;
- one JSON-RPC request ``tools/call`` (string or integer id) without ``_meta.progressToken``, for
  a tool the ``accepts`` predicate names (tools that answer at once);
- ``MCP-Protocol-Version`` absent or of the handshake era, and an ``Mcp-Session-Id`` of a live
  session opened by the same caller.

A quick tool under an owner policy of ``require_approval`` still waits for the decision (a JSON
answer, no keep-alive bytes meanwhile); the waiting tools keep the SDK's SSE with its pings.

SDK facts relied on (mcp 2.3.0, ``streamable_http_manager`` / ``streamable_http``): the manager
keeps ``_server_instances[session_id] -> transport`` and ``_session_owners[session_id] ->
AuthorizationContext``; a transport has ``is_terminated`` and an idle countdown
(``idle_scope.deadline``, ``_idle_timeout``, ``_requests_in_flight``) that ``handle_request``
suspends while a request is in flight. The quick path does the same; if any of these names is
missing (another SDK version), it steps aside and the SDK serves every request.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import Message, Receive, Scope, Send

CallFn = Callable[[str, dict[str, Any], Any], Awaitable[dict[str, Any]]]
"""``(tool, arguments, caller) -> CallToolResult`` in its wire form (camelCase keys)."""

_SESSION = b"mcp-session-id"
_VERSION = b"mcp-protocol-version"
_HANDSHAKE = frozenset(v.encode() for v in HANDSHAKE_PROTOCOL_VERSIONS)


class QuickCalls:
    """Serves qualifying ``tools/call`` POSTs; see the module docstring for the conditions."""

    def __init__(
        self,
        manager: StreamableHTTPSessionManager,
        call: CallFn,
        accepts: Callable[[str], bool],
    ) -> None:
        self._manager = manager
        self._call = call
        self._accepts = accepts
        self.enabled = all(
            hasattr(manager, name) for name in ("_server_instances", "_session_owners")
        )

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, caller: Any
    ) -> Receive | None:
        """Answer and return None, or return a ``receive`` that replays the body for the SDK."""
        transport = self._transport(scope)
        if transport is None:
            return receive
        message = await receive()
        replay = _replaying(message, receive)
        request = _tool_call(message.get("body", b""))
        if request is None or not self._accepts(request["params"]["name"]):
            return replay
        session_id = transport.mcp_session_id
        if not self._owned_by(session_id, scope):
            return replay
        params = request["params"]
        with _in_flight(transport):
            result = await self._call(params["name"], params.get("arguments") or {}, caller)
        body = json.dumps(
            {"jsonrpc": "2.0", "id": request["id"], "result": result},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (_SESSION, session_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return None

    def _transport(self, scope: Scope) -> Any:
        """The live session this POST names, if the request may take the quick path at all."""
        if not self.enabled or scope.get("method") != "POST":
            return None
        headers = dict(scope.get("headers") or ())
        version = headers.get(_VERSION)
        if version is not None and version not in _HANDSHAKE:
            return None
        if b"application/json" not in headers.get(b"accept", b""):
            return None
        if not headers.get(b"content-type", b"").startswith(b"application/json"):
            return None
        session_id = headers.get(_SESSION)
        if session_id is None:
            return None
        transport = self._manager._server_instances.get(session_id.decode("latin-1"))
        if transport is None or transport.is_terminated or not _has_idle_countdown(transport):
            return None
        if transport.idle_scope is not None and transport.idle_scope.cancel_called:
            return None  # the session is expiring: the SDK answers that
        return transport

    def _owned_by(self, session_id: str, scope: Scope) -> bool:
        user = scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        owner = self._manager._session_owners.get(session_id)
        return owner is not None and owner == requestor


def _tool_call(body: bytes) -> dict[str, Any] | None:
    """The JSON-RPC ``tools/call`` request in ``body`` if it asks for no progress, else None."""
    if b'"tools/call"' not in body:
        return None
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or request.get("jsonrpc") != "2.0":
        return None
    if request.get("method") != "tools/call":
        return None
    request_id = request.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        return None
    params = request.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("name"), str):
        return None
    arguments = params.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        return None
    meta = params.get("_meta")
    if meta is not None and (not isinstance(meta, dict) or "progressToken" in meta):
        return None
    return request


def _replaying(first: Message, receive: Receive) -> Receive:
    pending: list[Message] = [first]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay


def _has_idle_countdown(transport: Any) -> bool:
    return all(
        hasattr(transport, name) for name in ("idle_scope", "_idle_timeout", "_requests_in_flight")
    )


class _in_flight:
    """Suspend the session's idle countdown while the call runs (as ``handle_request`` does)."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def __enter__(self) -> None:
        transport = self.transport
        transport._requests_in_flight += 1
        if transport.idle_scope is not None:
            transport.idle_scope.deadline = math.inf

    def __exit__(self, *exc: object) -> None:
        transport = self.transport
        transport._requests_in_flight -= 1
        scope, timeout = transport.idle_scope, transport._idle_timeout
        if scope is not None and timeout is not None and not transport._requests_in_flight:
            scope.deadline = anyio.current_time() + timeout

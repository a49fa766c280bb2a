"""A quick path for MCP tool calls that stream nothing: one JSON answer instead of an SSE response.

Why: profiling ``llm_job_status`` over the SDK's stateful transport (mcp 2.3.0) showed about 2 ms
of server CPU per call, two thirds of it in the SSE response machinery (sse-starlette task group,
per-request memory streams, the dispatcher's task spawning), not in the tool. The Streamable HTTP
spec lets a server answer any POSTed request with ``Content-Type: application/json`` (the client
must accept both); when a call asks for no progress there is nothing to stream, so the gateway is
called directly and its result written once.

Taken only when all of these hold; otherwise the SDK serves the request unchanged:
- a POST with ``Content-Type: application/json`` whose ``Accept`` includes ``application/json``;
- one JSON-RPC request ``tools/call`` (string or integer id) without ``_meta.progressToken``, for
  a tool the ``accepts`` predicate names (tools that answer at once);
- ``MCP-Protocol-Version`` absent or of the handshake era, and an ``Mcp-Session-Id`` of a live
  session opened by the same caller (``session_owner``: the endpoint's ``SessionLedger``, which
  also keeps the session alive while the call runs; the SDK's own idle timeout is off).

A quick tool under an owner policy of ``require_approval`` still waits for the decision (a JSON
answer, no keep-alive bytes meanwhile); the waiting tools keep the SDK's SSE with its pings.

Cancellation: a ``notifications/cancelled`` naming a call in flight here (same session) cancels
it (``cancel``), and the call gets no JSON-RPC response, as the spec asks: its POST is answered
with an empty event stream, which every client reads as "no response on this stream".

Only public SDK names are used: results are shaped by ``mcp_types.methods.
serialize_server_result`` (the per-version wire surface the SDK's own server applies) and framed
by ``JSONRPCResponse``/``JSONRPCError``, so a new SDK changes this path as it changes its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types.methods import serialize_server_result
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.types import Scope, Send

log = logging.getLogger(__name__)

CallFn = Callable[[str, dict[str, Any], Any, str], Awaitable[types.CallToolResult]]
"""``(tool, arguments, caller, caller key) -> CallToolResult``; raises ``MCPError`` for a
protocol error (an unknown tool)."""

_SESSION = b"mcp-session-id"
_VERSION = b"mcp-protocol-version"
_HANDSHAKE = frozenset(v.encode() for v in HANDSHAKE_PROTOCOL_VERSIONS)
_CANCELLED = "cancelled"


class QuickCalls:
    """Serves qualifying ``tools/call`` POSTs; see the module docstring for the conditions."""

    def __init__(
        self,
        call: CallFn,
        accepts: Callable[[str], bool],
        session_owner: Callable[[str], str | None],
    ) -> None:
        self._call = call
        self._accepts = accepts
        self._session_owner = session_owner
        self._running: dict[tuple[str, str | int], asyncio.Task[types.CallToolResult]] = {}

    def session_of(self, scope: Scope, message: Mapping[str, Any] | None, key: str) -> str | None:
        """The session this POST may be answered in, or None when the SDK must serve it."""
        if message is None or scope.get("method") != "POST" or not _tool_call(message):
            return None
        if not self._accepts(message["params"]["name"]):
            return None
        headers = dict(scope.get("headers") or ())
        version = headers.get(_VERSION)
        if version is not None and version not in _HANDSHAKE:
            return None
        if b"application/json" not in headers.get(b"accept", b""):
            return None
        if not headers.get(b"content-type", b"").startswith(b"application/json"):
            return None
        raw_session = headers.get(_SESSION)
        if raw_session is None:
            return None
        session_id = raw_session.decode("latin-1")
        return session_id if self._session_owner(session_id) == key else None

    async def serve(
        self,
        scope: Scope,
        message: Mapping[str, Any],
        send: Send,
        caller: Any,
        key: str,
        session_id: str,
    ) -> None:
        """Run the call and write its answer (``session_of`` said this POST qualifies)."""
        params = message["params"]
        request_id: str | int = message["id"]
        slot = (session_id, request_id)
        task = asyncio.ensure_future(
            self._call(params["name"], dict(params.get("arguments") or {}), caller, key)
        )
        self._running[slot] = task
        try:
            answer = await _answer(task, request_id, _version(scope))
        finally:
            if self._running.get(slot) is task:
                del self._running[slot]
            if not task.done():  # the HTTP request itself was cancelled (client went away)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        headers = [(_SESSION, session_id.encode("latin-1"))]
        if answer is _CANCELLED:
            start = {"type": "http.response.start", "status": 200, "headers": _no_events(headers)}
            await send(start)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        assert isinstance(answer, bytes)
        headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", b"%d" % len(answer)))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer, "more_body": False})

    def cancel(self, session_id: str, request_id: Any) -> bool:
        """Cancel the call ``request_id`` of ``session_id`` if it runs here; True if it did."""
        if isinstance(request_id, bool) or not isinstance(request_id, str | int):
            return False
        task = self._running.get((session_id, request_id))
        if task is None or task.done():
            return False
        task.cancel()
        return True


async def _answer(
    task: asyncio.Task[types.CallToolResult], request_id: str | int, version: str
) -> bytes | str:
    """The JSON-RPC answer to write, or ``_CANCELLED`` when the client cancelled the call."""
    try:
        result = await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.cancelled():
            raise  # the HTTP request was cancelled, not the call
        return _CANCELLED
    except MCPError as refusal:
        return _error(request_id, refusal.error)
    try:
        wire = serialize_server_result(
            "tools/call", version, result.model_dump(by_alias=True, mode="json", exclude_none=True)
        )
    except ValidationError:  # as the SDK's server does: the detail stays in the log
        log.exception("tools/call returned a result the %s surface rejects", version)
        message = "Handler returned an invalid result"
        return _error(request_id, types.ErrorData(code=types.INTERNAL_ERROR, message=message))
    response = types.JSONRPCResponse(jsonrpc="2.0", id=request_id, result=wire)
    return response.model_dump_json(by_alias=True, exclude_unset=True).encode("utf-8")


def _error(request_id: str | int, error: types.ErrorData) -> bytes:
    framed = types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error)
    return framed.model_dump_json(by_alias=True, exclude_unset=True).encode("utf-8")


def _version(scope: Scope) -> str:
    for name, value in scope.get("headers") or ():
        if bytes(name).lower() == _VERSION:
            return bytes(value).decode("latin-1")
    return types.DEFAULT_NEGOTIATED_VERSION


def _no_events(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [*headers, (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _tool_call(message: Mapping[str, Any]) -> bool:
    """Whether ``message`` is a JSON-RPC ``tools/call`` request that asks for no progress."""
    if message.get("jsonrpc") != "2.0" or message.get("method") != "tools/call":
        return False
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        return False
    params = message.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("name"), str):
        return False
    arguments = params.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        return False
    meta = params.get("_meta")
    return meta is None or (isinstance(meta, dict) and "progressToken" not in meta)

"""A quick path for MCP requests that stream nothing: one JSON answer instead of an SSE response.

Why: profiling ``llm_job_status`` over the SDK's stateful transport (mcp 2.3.0) showed about 2 ms
of server CPU per call, two thirds of it in the SSE response machinery (sse-starlette task group,
per-request memory streams, the dispatcher's task spawning), not in the tool. The Streamable HTTP
spec lets a server answer any POSTed request with ``Content-Type: application/json`` (the client
must accept both); when a call asks for no progress there is nothing to stream, so the gateway is
called directly and its result written once.

Two fronts use it: the Tornado handler (``mcp_handler``) answers qualifying POSTs itself, before
any ASGI scope exists, and the endpoint's ASGI app (``MCPEndpoint.asgi_app``) does the same for
ASGI servers. Both ask ``session_for`` with a header getter and write what ``answer`` returns.

Taken only when all of these hold; otherwise the SDK serves the request unchanged:
- a POST with ``Content-Type: application/json`` whose ``Accept`` includes ``application/json``;
- one JSON-RPC request (string or integer id): ``tools/call`` without ``_meta.progressToken``
  for a tool the ``accepts`` predicate names (tools that answer at once), or ``ping``;
- ``MCP-Protocol-Version`` absent or of the handshake era, and an ``Mcp-Session-Id`` of a live
  session opened by the same caller (``session_owner``: the endpoint's ``SessionLedger``, which
  also keeps the session alive while the call runs; the SDK's own idle timeout is off).

A quick tool under an owner policy of ``require_approval`` still waits for the decision (a JSON
answer, no keep-alive bytes meanwhile); the waiting tools keep the SDK's SSE with its pings.

Cancellation: a ``notifications/cancelled`` naming a call in flight here (same session) cancels
it (``cancel``), and the call gets no JSON-RPC response, as the spec asks: its POST is answered
with an empty event stream, which every client reads as "no response on this stream".

The answer is written by ``mcp_results.answer_bytes``: a success's one JSON string (made once by
pydantic-core in the gateway) spliced into the JSON-RPC envelope, no dict and no pydantic model
on the way. The shape is ``result_wire``'s, pinned against the SDK's own per-revision surface
(``serialize_server_result``) by ``tests/server/test_mcp_results.py``, and the splice against
``result_wire`` by ``tests/server/test_mcp_wire_splice.py``. Protocol errors (an unknown tool)
are framed by the SDK's ``JSONRPCError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import Scope, Send

from llmgw_jupyter.server.mcp_results import ToolResult, answer_bytes, response_bytes

log = logging.getLogger(__name__)

CallFn = Callable[[str, dict[str, Any], Any, str], Awaitable[ToolResult]]
"""``(tool, arguments, caller, caller key) -> the call's result`` (``mcp_results.ToolResult``);
raises ``MCPError`` for a protocol error (an unknown tool)."""
HeaderFn = Callable[[str], "str | None"]
"""A request header's value by its lower-case name (None when absent)."""

SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
_HANDSHAKE = frozenset(HANDSHAKE_PROTOCOL_VERSIONS)
EVENT_STREAM_HEADERS = (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"))
"""Headers of the empty event stream that answers a cancelled call (no JSON-RPC response)."""


class QuickCalls:
    """Serves qualifying POSTs; see the module docstring for the conditions."""

    def __init__(
        self,
        call: CallFn,
        accepts: Callable[[str], bool],
        session_owner: Callable[[str], str | None],
    ) -> None:
        self._call = call
        self._accepts = accepts
        self._session_owner = session_owner
        self._running: dict[tuple[str, str | int], asyncio.Task[Any]] = {}
        self._cancelled: set[tuple[str, str | int]] = set()  # slots ``cancel`` cancelled

    def session_for(
        self, method: str, header: HeaderFn, message: Mapping[str, Any] | None, key: str
    ) -> str | None:
        """The session this request may be answered in, or None when the SDK must serve it."""
        if message is None or method != "POST" or not self._quick_message(message):
            return None
        version = header(VERSION_HEADER)
        if version is not None and version not in _HANDSHAKE:
            return None
        if "application/json" not in (header("accept") or ""):
            return None
        if not (header("content-type") or "").startswith("application/json"):
            return None
        session_id = header(SESSION_HEADER)
        if session_id is None:
            return None
        return session_id if self._session_owner(session_id) == key else None

    def session_of(self, scope: Scope, message: Mapping[str, Any] | None, key: str) -> str | None:
        """``session_for`` over an ASGI scope."""
        headers = {
            bytes(name).decode("latin-1"): bytes(value).decode("latin-1")
            for name, value in scope.get("headers") or ()
        }
        return self.session_for(str(scope.get("method")), headers.get, message, key)

    async def answer(
        self, message: Mapping[str, Any], caller: Any, key: str, session_id: str
    ) -> bytes | None:
        """The JSON-RPC answer to ``message`` (``session_for`` said it qualifies), encoded; None
        when the client cancelled the call (it gets no response).

        The call runs in the caller's own task (no task of its own): the answer is written in
        the same loop step the tool returns in, before work the tool scheduled (a job's spawn)
        runs, and ``cancel`` cancels that task, which this method tells from any other
        cancellation by the slot it marked.
        """
        request_id: str | int = message["id"]
        if message["method"] == "ping":
            return response_bytes(request_id, {})
        params = message["params"]
        task = asyncio.current_task()
        assert task is not None
        slot = (session_id, request_id)
        self._running[slot] = task
        cancelled = False
        try:
            result = await self._call(
                params["name"], dict(params.get("arguments") or {}), caller, key
            )
        except asyncio.CancelledError:
            if slot not in self._cancelled:
                raise  # the request itself was cancelled, not the call
            cancelled = True
        except MCPError as refusal:
            framed = types.JSONRPCError(jsonrpc="2.0", id=request_id, error=refusal.error)
            return framed.model_dump_json(by_alias=True, exclude_unset=True).encode("utf-8")
        finally:
            if self._running.get(slot) is task:
                del self._running[slot]
            if slot in self._cancelled:  # ``cancel``'s cancellation was consumed: take it back
                self._cancelled.discard(slot)
                _uncancel(task)
        if cancelled:
            return None
        return answer_bytes(request_id, result)

    async def serve(
        self,
        scope: Scope,
        message: Mapping[str, Any],
        send: Send,
        caller: Any,
        key: str,
        session_id: str,
    ) -> None:
        """``answer`` written to an ASGI ``send``."""
        answer = await self.answer(message, caller, key, session_id)
        headers = [(SESSION_HEADER.encode(), session_id.encode("latin-1"))]
        if answer is None:
            headers += [(k.lower().encode(), v.encode()) for k, v in EVENT_STREAM_HEADERS]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", b"%d" % len(answer)))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer, "more_body": False})

    def cancel(self, session_id: str, request_id: Any) -> bool:
        """Cancel the call ``request_id`` of ``session_id`` if it runs here; True if it did."""
        if isinstance(request_id, bool) or not isinstance(request_id, str | int):
            return False
        slot = (session_id, request_id)
        task = self._running.get(slot)
        if task is None or task.done():
            return False
        self._cancelled.add(slot)
        task.cancel()
        return True

    def _quick_message(self, message: Mapping[str, Any]) -> bool:
        """A ``ping``, or a ``tools/call`` of a quick tool that asks for no progress."""
        if message.get("jsonrpc") != "2.0":
            return False
        request_id = message.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, str | int):
            return False
        method = message.get("method")
        params = message.get("params")
        if method == "ping":
            return params is None or isinstance(params, dict)
        if method != "tools/call" or not isinstance(params, dict):
            return False
        name = params.get("name")
        if not isinstance(name, str) or not self._accepts(name):
            return False
        arguments = params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            return False
        meta = params.get("_meta")
        return meta is None or (isinstance(meta, dict) and "progressToken" not in meta)


def _uncancel(task: asyncio.Task[Any]) -> None:
    """Take back a cancellation that was handled (Python 3.11+ counts them per task)."""
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()

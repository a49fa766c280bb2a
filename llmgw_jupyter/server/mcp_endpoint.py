"""The MCP endpoint: the gateway's tools served by the official ``mcp`` SDK (2.x, low-level server).

Why low-level ``Server`` and not ``MCPServer``: the tool list is per caller and computed per
request, so tools cannot be registered once as decorated functions.

How it is wired: the Tornado handler (``asgi_bridge.ASGIHandler`` subclass) authenticates the
request and puts the caller into ``scope[CALLER_SCOPE_KEY]``; ``MCPEndpoint.asgi_app`` checks
Host/Origin, refuses requests without a caller (401) and hands the rest to the SDK's
``StreamableHTTPSessionManager``. ``start()`` enters the manager once in a long-lived task.
The requests that stream nothing (``mcp_quick``) never get that far: Jupyter's route is served
by ``mcp_handler.QuickMCPHandler``, which answers them itself with ``host_and_origin_pass``,
``quick_session`` and ``answer_quick`` (the same checks, the same ledger, no ASGI scope), and
``asgi_app`` keeps its own quick branch for ASGI servers.

Sessions: stateful with SSE responses (the SDK default). SSE responses carry the progress
notifications of a running call on the call's own POST; sessions allow server-to-client
requests later. Each session is bound to the caller that opened it: we set ``scope["user"]`` to
an SDK ``AuthenticatedUser`` whose ``client_id`` is the caller's key, and the manager answers 404
(as for an unknown session) to any request for that session from another caller. Requests of
the 2026-07-28 revision (no ``initialize``, no session) reach the same handlers statelessly.

Containment: ``mcp_sessions.SessionLedger`` caps the sessions of each grant and of all grants
together (429 naming the limit); the SDK's own ``max_sessions`` is the owner's room plus the
grants' total, so grants can never take the owner's room. ``close_sessions(caller)`` ends every
session of one caller (a revoked grant) through the SDK's public path, an HTTP ``DELETE``; idle
sessions end the same way (the ledger owns the idle rule, see there). Bodies are capped on every
path (413 naming the limit): ``refusal(scope)`` judges a request by its headers alone
(Host/Origin, caller, declared length) so the Tornado side can answer before reading a body
byte, and ``asgi_app`` counts what it reads before the quick path or the SDK.

What every client can read (issue 10):
- Tool errors are ``isError`` results with text only: no ``structuredContent``, because the
  spec requires structured content to match the tool's ``outputSchema`` and the schemas describe
  success; the facts are in the text and in ``_meta["llmgw/error"]`` (``mcp_results``, which
  builds every result once in wire form for both paths).
- Unknown tools are the protocol error ``-32602`` (the gateway still audits and rate-limits the
  attempt); an invalid ``tools/list`` cursor is ``-32602`` too (there is one page).
- A cancelled request gets no response; event streams are primed at once (``mcp_streams``); a
  ``GET`` with ``Last-Event-ID`` is 405 (no event history).
- 2025-03-26 requires JSON-RPC batches, which the SDK's transport does not take, so it is not
  agreed to: an ``initialize`` asking for it is answered with the newest handshake revision
  (the spec's answer to an unsupported version).
- ``tools.listChanged`` is declared and ``notifications/tools/list_changed`` reaches the open
  sessions whose visible tools changed (``mcp_tool_lists``).

SDK facts relied on (mcp 2.3.0, public names only; ``tests/server/test_mcp_protocol.py`` pins
them):
- ``mcp.server.lowlevel.Server(name, on_list_tools=..., on_call_tool=...)``; handlers are
  ``async (ctx: ServerRequestContext, params) -> result`` and raise ``MCPError`` for protocol
  errors. The manager builds the ``initialize`` result from
  ``server.create_initialization_options()`` (no arguments), so a subclass that defaults its
  ``NotificationOptions`` to ``tools_changed=True`` declares ``tools.listChanged``.
- ``ctx.request`` is the ``starlette.requests.Request`` of the HTTP request that carried the
  JSON-RPC message, so ``ctx.request.scope`` holds what the Tornado side injected (handlers run
  in the manager's task group, so contextvars of the request do not reach them; the scope does).
  ``ctx.session.send_tool_list_changed()`` goes out on the session's standalone (GET) stream.
- ``StreamableHTTPSessionManager(app, json_response, stateless, security_settings,
  session_idle_timeout, max_request_body_size, max_sessions)``; ``run()`` is an async context
  manager usable once per instance; ``handle_request(scope, receive, send)`` is the ASGI entry.
  ``session_idle_timeout=None`` turns the SDK's idle expiry off.
- Stateful sessions record ``authorization_context(scope["user"])`` and answer 404 when a later
  request for the session carries a different one; ``DELETE`` with the session's id and its
  creator's ``scope["user"]`` terminates it.
- Requests whose ``MCP-Protocol-Version`` header is not a handshake-era version go to the
  stateless 2026-07-28 path; both reach the same handlers.
- ``TransportSecuritySettings`` / ``TransportSecurityMiddleware.validate_request`` answer 421
  for a bad Host and 403 for a bad Origin; an absent Origin passes (non-browser clients).
- ``ctx.session.report_progress`` emits ``notifications/progress`` for the request being
  handled; ``mcp.shared.jsonrpc_dispatcher.progress_token_from_params`` reads the token.
- The low-level server passes every ``tools/call`` to ``on_call_tool`` without checking the name
  against the tool list; the endpoint forwards all of them to ``gateway.call``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.streamable_http_manager import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_SESSION_IDLE_TIMEOUT,
    StreamableHTTPSessionManager,
)
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import Message, Receive, Scope, Send

from llmgw_jupyter.errors import GatewayError
from llmgw_jupyter.server.mcp_quick import HeaderFn, QuickCalls
from llmgw_jupyter.server.mcp_results import (  # noqa: F401 - re-exported, the endpoint's API
    ERROR_META_KEY,
    ErrorResult,
    ToolResult,
    call_result,
    error_result,
    error_wire,
    result_wire,
)
from llmgw_jupyter.server.mcp_sessions import SessionLedger, SessionRefusal
from llmgw_jupyter.server.mcp_streams import cannot_resume, stream_send
from llmgw_jupyter.server.mcp_tool_lists import ToolListWatch

log = logging.getLogger(__name__)

CALLER_SCOPE_KEY = "llmgw.caller"
# Set by the Tornado front when ``refusal`` already passed on this very scope (its headers cannot
# change afterwards): the ASGI side then skips repeating the Host/Origin and token checks.
PRECHECKED_SCOPE_KEY = "llmgw.prechecked"
"""ASGI scope key under which the Tornado handler puts the authenticated caller."""

LOCAL_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")
LOCAL_ORIGINS = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")

BATCH_ERA_VERSION = "2025-03-26"
"""The one revision with JSON-RPC batches: not agreed to (see the module docstring)."""

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SESSION_HEADER = b"mcp-session-id"
_VERSION_HEADER = b"mcp-protocol-version"
_HANDSHAKE = frozenset(v.encode() for v in HANDSHAKE_PROTOCOL_VERSIONS)
_MAX_SHOWN = 64
_MAX_PASSING_PAIRS = 256  # remembered Host/Origin pairs that passed (emptied when full)
BODY_LIMIT = "max_mcp_body_bytes"


class ToolSpec(Protocol):
    """One tool as the gateway describes it to a caller."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def input_schema(self) -> dict[str, Any]: ...
    @property
    def output_schema(self) -> dict[str, Any] | None: ...
    @property
    def annotations(self) -> Any: ...  # a mapping, or an object with ``to_dict()``


class Gateway(Protocol):
    """What the endpoint needs from ``llmgw_jupyter.gateway.Gateway`` (``list_tools`` may be
    sync or async). Optional, found with ``getattr``: ``policy_for(caller)`` (whose identity
    changes when the caller's policy does) and ``add_tools_changed_listener(callback)``."""

    def list_tools(self, caller: Any) -> Sequence[ToolSpec] | Awaitable[Sequence[ToolSpec]]: ...

    async def call(
        self,
        tool_name: str,
        arguments: dict[str, Any],
        caller: Any,
        progress: ProgressFn | None = None,
    ) -> ToolResult: ...


class ToolsChangingServer(Server[Any]):
    """The low-level ``Server`` declaring ``tools.listChanged`` by default (the SDK's manager asks
    ``create_initialization_options()`` with no arguments for the ``initialize`` result)."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


class MCPEndpoint:
    """The ASGI app plus the lifecycle of the SDK session manager behind it."""

    def __init__(
        self,
        server: Server[Any],
        manager: StreamableHTTPSessionManager,
        security: TransportSecuritySettings,
        caller_key: Callable[[Any], str],
        *,
        sessions: SessionLedger | None = None,
        max_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_SIZE,
        setting_of: Callable[[str], str] = str,
        tool_lists: ToolListWatch | None = None,
    ) -> None:
        self.server = server
        self.session_manager = manager
        self._security = TransportSecurityMiddleware(security)
        self._caller_key = caller_key
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.quick: QuickCalls | None = None  # set by build_mcp_app(quick_tools=...)
        self.sessions = sessions  # None when stateless: no sessions to count
        self.max_body_bytes = max_body_bytes
        self._setting_of = setting_of
        self.tool_lists = tool_lists  # who is told of tool list changes
        self._reaper_wake = asyncio.Event()
        self._reaper_has_deadline = False
        self._passing_pairs: set[tuple[str | None, str | None]] = set()

    @property
    def running(self) -> bool:
        return self._ready.is_set() and self._task is not None and not self._task.done()

    async def run(self) -> None:
        """Enter the session manager and stay in it (ending idle sessions) until cancelled."""
        async with self.session_manager.run():
            self._ready.set()
            try:
                await self._end_idle_sessions()
            finally:
                self._ready.clear()

    async def start(self) -> None:
        """Start ``run()`` in a long-lived task and return once requests can be served."""
        if self._task is not None:
            raise RuntimeError("MCP endpoint already started (the SDK manager runs once)")
        if self.tool_lists is not None:
            self.tool_lists.start(asyncio.get_running_loop())
        self._task = asyncio.create_task(self.run(), name="llmgw-mcp-session-manager")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._task.done():
            self._task.result()  # re-raise the start-up failure

    async def stop(self) -> None:
        """Cancel the manager task: open sessions and streams end, in-flight calls are cancelled."""
        if self.tool_lists is not None:
            await self.tool_lists.stop()
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def refusal(self, scope: Scope) -> ASGIApp | None:
        """The answer to a request that must not be served, judged by its headers alone.

        Host/Origin (421/403), an authenticated caller (401), a running manager (503) and the
        declared body length (413), in that order: a front end can call this before reading
        any body byte.
        """
        refusal = await self._security.validate_request(Request(scope), is_post=False)
        if refusal is not None:
            return refusal
        if CALLER_SCOPE_KEY not in scope:
            return unauthenticated()
        if not self.running:
            return PlainTextResponse("MCP endpoint not running", status_code=503)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return self.body_too_large()
        return None

    async def host_and_origin_pass(self, host: str | None, origin: str | None) -> bool:
        """Whether a request with these Host and Origin headers (None: absent) passes the SDK's
        DNS-rebinding check; passing pairs are remembered (the settings never change)."""
        pair = (host, origin)
        if pair in self._passing_pairs:
            return True
        headers = [] if host is None else [(b"host", host.encode("latin-1"))]
        if origin is not None:
            headers.append((b"origin", origin.encode("latin-1")))
        probe = Request({"type": "http", "headers": headers})
        if await self._security.validate_request(probe, is_post=False) is not None:
            return False
        if len(self._passing_pairs) >= _MAX_PASSING_PAIRS:
            self._passing_pairs.clear()
        self._passing_pairs.add(pair)
        return True

    def quick_session(
        self, method: str, header: HeaderFn, message: Mapping[str, Any] | None, key: str
    ) -> str | None:
        """The session a request may be answered in on the quick path (``mcp_quick``), or None
        when the ASGI app must serve it."""
        if self.quick is None or self.sessions is None:
            return None
        return self.quick.session_for(method, header, message, key)

    async def answer_quick(
        self, session_id: str, message: Mapping[str, Any], caller: Any, key: str
    ) -> bytes | None:
        """The quick answer to ``message`` in ``session_id`` (``quick_session`` said so), with
        the session kept alive meanwhile; None when the call was cancelled (no response)."""
        assert self.quick is not None and self.sessions is not None
        self.sessions.begin(session_id)
        try:
            return await self.quick.answer(message, caller, key, session_id)
        finally:
            self.sessions.end(session_id, key, "POST", 200)
            self._sessions_changed()

    def body_too_large(self) -> ASGIApp:
        return body_too_large(self.max_body_bytes, self._setting_of(BODY_LIMIT))

    async def asgi_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Header checks, the capped body, the session ledger, then the quick path or the SDK."""
        if scope["type"] != "http":
            return
        prechecked = scope.get(PRECHECKED_SCOPE_KEY) is True and self.running
        refusal = None if prechecked else await self.refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        body = await read_body(receive, self.max_body_bytes)
        if body is None:
            await self.body_too_large()(scope, receive, send)
            return
        handshake = _handshake_era(scope)
        if handshake and scope.get("method") == "GET" and _header(scope, b"last-event-id"):
            await cannot_resume()(scope, receive, send)
            return
        message = json_message(body) if scope.get("method") == "POST" else None
        version = _stream_version(scope, message)
        if message is not None and message.get("method") == "initialize":
            body, message = _no_batch_era(body, message)
        receive = replay_body(body, receive)
        caller = scope[CALLER_SCOPE_KEY]
        key = self._caller_key(caller)
        scope["user"] = _user(key)
        sdk_send = send
        if handshake:  # the 2026 path's streams are the SDK's own
            sdk_send = stream_send(send, version=version, request_id=_request_id(message))
        if self.sessions is None or not handshake:
            await self.session_manager.handle_request(scope, receive, sdk_send)
            return
        session_header = _header(scope, _SESSION_HEADER)
        if session_header is None:
            await self._open_session(scope, receive, sdk_send, key)
            return
        status: int | None = None

        def watching(send: Send) -> Send:
            async def watch(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            return watch

        self.sessions.begin(session_header)
        try:
            if not await self._quick(scope, message, watching(send), caller, key, session_header):
                await self.session_manager.handle_request(scope, receive, watching(sdk_send))
        finally:
            self.sessions.end(session_header, key, str(scope.get("method")), status)
            self._sessions_changed()

    async def _quick(
        self,
        scope: Scope,
        message: dict[str, Any] | None,
        send: Send,
        caller: Any,
        key: str,
        session_id: str,
    ) -> bool:
        """Serve ``message`` on the quick path if it qualifies; True if it was answered."""
        if self.quick is None or message is None:
            return False
        if message.get("method") == "notifications/cancelled":
            params = message.get("params")
            owned = self.sessions is not None and self.sessions.owner_of(session_id) == key
            if owned and isinstance(params, dict):
                self.quick.cancel(session_id, params.get("requestId"))
            return False  # the SDK acknowledges it (202) as for its own requests
        if self.quick.session_of(scope, message, key) != session_id:
            return False
        await self.quick.serve(scope, message, send, caller, key, session_id)
        return True

    async def _open_session(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        """A request that may open a session: within the caller's cap, and recorded if it does."""
        assert self.sessions is not None
        refused = self.sessions.reserve(key)
        if refused is not None:
            log.warning("llmgw: MCP session refused: %s", refused.message)
            await self._session_limit(refused)(scope, receive, send)
            return
        opened: str | None = None

        async def watch(message: Message) -> None:
            nonlocal opened
            if message["type"] == "http.response.start" and int(message["status"]) < 400:
                opened = _header({"headers": message.get("headers", ())}, _SESSION_HEADER)
            await send(message)

        try:
            await self.session_manager.handle_request(scope, receive, watch)
        finally:
            self.sessions.opened(key, opened, (_header(scope, b"host") or "").encode("latin-1"))
            self._sessions_changed()

    def _session_limit(self, refused: SessionRefusal) -> ASGIApp:
        return limit_response(
            429,
            f"{refused.message}; close sessions you no longer use (HTTP DELETE with their "
            f"Mcp-Session-Id) or ask the server's owner to raise "
            f"{self._setting_of(refused.limit)}",
            refused.limit,
            refused.maximum,
        )

    # -- ending sessions ----------------------------------------------------------------------
    async def close_sessions(self, key: str) -> int:
        """End every open session of the caller ``key`` (a revoked grant); returns how many.

        Each one gets the request its client would send to end it, a ``DELETE`` with its
        session id and its creator's identity: its open streams end and its id answers 404.
        """
        if self.sessions is None:
            return 0
        closed = 0
        for session_id, host in self.sessions.sessions_of(key):
            self.sessions.forget(session_id)
            if await self._delete_session(session_id, key, host):
                closed += 1
        return closed

    def _sessions_changed(self) -> None:
        """A session opened or a request ended: wake the idle reaper if it waits for no
        deadline (deadlines only move later otherwise, so its timer stays right)."""
        if not self._reaper_has_deadline:
            self._reaper_wake.set()

    async def _end_idle_sessions(self) -> None:
        """End each session once the ledger says it idled out (the SDK's idle timeout is off)."""
        ledger = self.sessions
        if ledger is None or ledger.idle_timeout is None:
            await asyncio.Event().wait()
            return
        while True:
            self._reaper_wake.clear()
            for session_id, key, host in ledger.take_expired():
                log.info("llmgw: MCP session %s of %s idled out", session_id, key)
                await self._delete_session(session_id, key, host)
            deadline = ledger.next_expiry()
            self._reaper_has_deadline = deadline is not None
            timeout = None if deadline is None else max(0.0, deadline - ledger.clock()) + 0.01
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._reaper_wake.wait(), timeout)

    async def _delete_session(self, session_id: str, key: str, host: bytes) -> bool:
        """End one session in the SDK as its client would, with a ``DELETE``; True if it ended."""
        if not self.running:
            return False
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "DELETE",
            "scheme": "http",
            "path": "/",
            "raw_path": b"/",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", host), (_SESSION_HEADER, session_id.encode("latin-1"))],
            "client": None,
            "server": None,
            "state": {},
            "user": _user(key),
        }
        status: int | None = None

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])

        try:
            await self.session_manager.handle_request(scope, _empty_request(), record)
        except Exception:
            log.exception("llmgw: closing MCP session %s of %s failed", session_id, key)
            return False
        return status is not None and status < 300


def unauthenticated() -> ASGIApp:
    return JSONResponse(
        {"error": "invalid_token", "error_description": "Authentication required"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def body_too_large(max_bytes: int, setting: str) -> ASGIApp:
    """413 naming the body limit and the setting that changes it."""
    return limit_response(
        413,
        f"request body larger than {max_bytes} bytes, the most the MCP endpoint accepts; the "
        f"server's owner can raise {setting}",
        BODY_LIMIT,
        max_bytes,
    )


def limit_response(status: int, message: str, limit: str, maximum: int) -> ASGIApp:
    """A JSON-RPC error (no request id, as the SDK's own transport errors) naming the limit."""
    data = {"category": "limit_exceeded", "limit": limit, "max": maximum}
    return JSONResponse(
        {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": types.INVALID_REQUEST, "message": message, "data": data},
        },
        status_code=status,
    )


@functools.lru_cache(maxsize=1024)
def _user(key: str) -> AuthenticatedUser:
    """The SDK's user for a caller key (immutable: built once per caller, not per request)."""
    return AuthenticatedUser(AccessToken(token="", client_id=key, scopes=[]))


def _header(scope: Mapping[str, Any], name: str | bytes) -> str | None:
    wanted = name.encode("latin-1") if isinstance(name, str) else name
    for raw_name, value in scope.get("headers") or ():
        if bytes(raw_name).lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


def _handshake_era(scope: Scope) -> bool:
    """Requests the SDK serves statefully (the modern 2026 path opens no session)."""
    version = _header(scope, _VERSION_HEADER)
    return version is None or version.encode("latin-1") in _HANDSHAKE


def json_message(body: bytes) -> dict[str, Any] | None:
    """The JSON-RPC message object a POST carries, or None (a batch, bad JSON: the SDK says)."""
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        message = json.loads(body)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _request_id(message: Mapping[str, Any] | None) -> Any:
    """The id of the JSON-RPC request ``message`` (None for notifications and responses)."""
    if message is None or not isinstance(message.get("method"), str):
        return None
    return message.get("id")


def _stream_version(scope: Scope, message: Mapping[str, Any] | None) -> str:
    """The revision the client speaks: its header, or what its ``initialize`` asks for."""
    version = _header(scope, _VERSION_HEADER)
    if version is not None:
        return version
    if message is not None and message.get("method") == "initialize":
        params = message.get("params")
        if isinstance(params, dict) and isinstance(params.get("protocolVersion"), str):
            return str(params["protocolVersion"])
    return types.DEFAULT_NEGOTIATED_VERSION


def _no_batch_era(body: bytes, message: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """An ``initialize`` asking for 2025-03-26 asks for the newest handshake revision instead.

    The spec: a server that does not support the requested version answers with another one it
    supports, the latest; the client then decides. Changing the request is how the SDK's own
    negotiation (which agrees to every handshake revision) gives that answer.
    """
    params = message.get("params")
    if not isinstance(params, dict) or params.get("protocolVersion") != BATCH_ERA_VERSION:
        return body, message
    message = {**message, "params": {**params, "protocolVersion": LATEST_HANDSHAKE_VERSION}}
    return json.dumps(message).encode("utf-8"), message


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """``receive`` with ``body`` (already read) given back first, for the app served next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _empty_request() -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def build_mcp_app(
    gateway: Gateway,
    *,
    allowed_hosts: Sequence[str],
    allowed_origins: Sequence[str],
    dns_rebinding_protection: bool = True,
    caller_key: Callable[[Any], str] = str,
    name: str = "llmgw",
    version: str = "",
    instructions: str | None = None,
    stateless: bool = False,
    json_response: bool = False,
    session_idle_timeout: float | None = DEFAULT_SESSION_IDLE_TIMEOUT,
    max_sessions: int | None = DEFAULT_MAX_SESSIONS,
    max_request_body_size: int = DEFAULT_MAX_REQUEST_BODY_SIZE,
    quick_tools: Callable[[str], bool] | None = None,
    max_sessions_per_grant: int | None = None,
    max_grant_sessions: int | None = None,
    is_grant: Callable[[str], bool] = lambda key: key != "owner",
    setting_of: Callable[[str], str] = str,
) -> MCPEndpoint:
    """Build the endpoint; call ``await endpoint.start()`` before serving ``endpoint.asgi_app``.

    ``allowed_hosts``/``allowed_origins`` take exact values or ``"host:*"`` port wildcards (see
    ``LOCAL_HOSTS``/``LOCAL_ORIGINS``); behind a proxy add its public host and origin.
    ``caller_key`` turns a caller into the identity a session is bound to. ``quick_tools`` names
    the tools (answering at once) whose calls without a progress token may skip the SSE response
    (``mcp_quick``).

    Sessions: ``max_sessions`` is the room of callers that are not grants (``is_grant`` on the
    caller key); each grant may hold ``max_sessions_per_grant`` sessions and all grants together
    ``max_grant_sessions``, on top of that room, so grants never crowd the owner out. A session
    with no request in flight for ``session_idle_timeout`` seconds ends.
    ``setting_of`` turns a limit's name into how its value is changed, for refusal messages.
    """
    policy_of: Callable[[Any], object] = getattr(gateway, "policy_for", lambda caller: None)
    ledger: SessionLedger | None = None
    if not stateless:
        ledger = SessionLedger(
            per_grant=max_sessions_per_grant,
            all_grants=max_grant_sessions,
            idle_timeout=session_idle_timeout,
            is_grant=is_grant,
        )

    async def names_for(caller: Any) -> list[str]:
        return [spec.name for spec in await _tools_for(gateway, caller)]

    alive: Callable[[str], bool] = ledger.__contains__ if ledger is not None else bool
    tool_lists = ToolListWatch(names_for, policy_of, alive)
    add_listener = getattr(gateway, "add_tools_changed_listener", None)
    if callable(add_listener):
        add_listener(tool_lists.changed)

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        if params is not None and params.cursor is not None:
            shown = json.dumps(params.cursor[:_MAX_SHOWN])
            raise MCPError(
                code=types.INVALID_PARAMS,
                message=f"cursor: {shown} is not a cursor this server gave out (tools/list has "
                "one page: call it without a cursor)",
                data={"category": "invalid_input", "field": "cursor"},
            )
        caller = _caller_of(ctx)
        policy = policy_of(caller)
        specs = await _tools_for(gateway, caller)
        session_id = _header(getattr(ctx.request, "scope", {}), _SESSION_HEADER)
        if ledger is not None and session_id is not None:
            names = [spec.name for spec in specs]
            tool_lists.seen(session_id, caller_key(caller), caller, ctx.session, names, policy)
        return types.ListToolsResult(tools=[_to_tool(spec) for spec in specs])

    async def run_call(
        tool: str, arguments: dict[str, Any], caller: Any, key: str, progress: ProgressFn | None
    ) -> ToolResult:
        """The call's result (``mcp_results`` renders it); ``MCPError`` for an unknown tool."""
        # Every call reaches the gateway, listed or not: it refuses unknown and hidden tools
        # itself ([POLICY DENIED] for hidden ones), audits and rate-limits the attempt.
        try:
            result = await gateway.call(tool, arguments, caller, progress)
        except GatewayError as exc:
            return ErrorResult("", exc.to_dict())
        finally:
            tool_lists.after_call(key, caller)
        if _unknown_tool(result):
            error = _error_of(result)
            raise MCPError(
                code=types.INVALID_PARAMS,
                message=str(error.get("message") or "unknown tool"),
                data={"category": error.get("category"), "field": "tool"},
            )
        return result

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = _caller_of(ctx)
        progress: ProgressFn | None = None
        if progress_token_from_params(ctx.params) is not None:
            progress = ctx.session.report_progress
        key = caller_key(caller)
        result = await run_call(params.name, dict(params.arguments or {}), caller, key, progress)
        return call_result(result)

    async def listen(
        ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        caller = _caller_of(ctx)
        return await tool_lists.listen(ctx, params, caller_key(caller), caller)

    async def quick_call(tool: str, arguments: dict[str, Any], caller: Any, key: str) -> ToolResult:
        return await run_call(tool, arguments, caller, key, None)

    server = ToolsChangingServer(
        name,
        version=version,
        instructions=instructions,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_subscriptions_listen=listen,
    )
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=dns_rebinding_protection,
        allowed_hosts=list(allowed_hosts),
        allowed_origins=list(allowed_origins),
    )
    sdk_max_sessions = max_sessions
    if ledger is not None and max_sessions is not None:
        # The grants' sessions come on top of the owner's room; uncapped grants: no SDK cap.
        grants = max_grant_sessions
        sdk_max_sessions = None if grants is None else max_sessions + grants
    manager = StreamableHTTPSessionManager(
        app=server,
        json_response=json_response,
        stateless=stateless,
        security_settings=security,
        # The ledger ends idle sessions (quick-path requests never reach the SDK's transport).
        session_idle_timeout=None if ledger is not None else session_idle_timeout,
        max_request_body_size=max_request_body_size,
        max_sessions=sdk_max_sessions,
    )
    endpoint = MCPEndpoint(
        server,
        manager,
        security,
        caller_key,
        sessions=ledger,
        max_body_bytes=max_request_body_size,
        setting_of=setting_of,
        tool_lists=tool_lists,
    )
    if quick_tools is not None and ledger is not None:
        endpoint.quick = QuickCalls(quick_call, quick_tools, ledger.owner_of)
    return endpoint


def _caller_of(ctx: ServerRequestContext[Any, Any]) -> Any:
    """The caller the Tornado side authenticated for the HTTP request carrying this message."""
    request = ctx.request
    scope = getattr(request, "scope", None)
    if not isinstance(scope, Mapping) or CALLER_SCOPE_KEY not in scope:
        raise MCPError(code=types.INVALID_REQUEST, message="No authenticated caller")
    return scope[CALLER_SCOPE_KEY]


async def _tools_for(gateway: Gateway, caller: Any) -> Sequence[ToolSpec]:
    specs = gateway.list_tools(caller)
    if inspect.isawaitable(specs):
        return await specs
    return specs


def _to_tool(spec: ToolSpec) -> types.Tool:
    raw = spec.annotations
    annotations = dict(raw.to_dict() if hasattr(raw, "to_dict") else raw or {})
    return types.Tool(
        name=spec.name,
        title=getattr(spec, "title", None),
        description=spec.description,
        input_schema=spec.input_schema,
        output_schema=spec.output_schema,
        annotations=types.ToolAnnotations.model_validate(annotations) if annotations else None,
    )


def _error_of(result: ToolResult) -> Mapping[str, Any]:
    error = (result.structured or {}).get("error")
    return error if isinstance(error, Mapping) else {}


def _unknown_tool(result: ToolResult) -> bool:
    """The gateway's answer to a tool name it does not know (``not_found`` on ``tool``)."""
    if not result.is_error:
        return False
    error = _error_of(result)
    category = getattr(result, "error", None) or error.get("category")
    return category == "not_found" and error.get("field") == "tool"

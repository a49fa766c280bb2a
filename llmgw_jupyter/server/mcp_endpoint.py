"""The MCP endpoint: the gateway's tools served by the official ``mcp`` SDK (2.x, low-level server).

Why low-level ``Server`` and not ``MCPServer``: the tool list is per caller and computed per
request, so tools cannot be registered once as decorated functions.

How it is wired: the Tornado handler (``asgi_bridge.ASGIHandler`` subclass) authenticates the
request and puts the caller into ``scope[CALLER_SCOPE_KEY]``; ``MCPEndpoint.asgi_app`` checks
Host/Origin, refuses requests without a caller (401) and hands the rest to the SDK's
``StreamableHTTPSessionManager``. ``start()`` enters the manager once in a long-lived task.

Sessions: stateful with SSE responses (the SDK default). SSE responses carry the progress
notifications of a running call on the call's own POST; sessions allow server-to-client
requests later. Each session is bound to the caller that opened it: we set ``scope["user"]`` to
an SDK ``AuthenticatedUser`` whose ``client_id`` is the caller's key, and the manager answers 404
(as for an unknown session) to any request for that session from another caller.

Containment: ``mcp_sessions.SessionLedger`` caps the sessions of each grant and of all grants
together (429 naming the limit); the SDK's own ``max_sessions`` is the owner's room plus the
grants' total, so grants can never take the owner's room. ``close_sessions(caller)`` ends every
session of one caller (a revoked grant) through the SDK's public path, an HTTP ``DELETE``.
Bodies are capped on every path (413 naming the limit): ``refusal(scope)`` judges a request by
its headers alone (Host/Origin, caller, declared length) so the Tornado side can answer before
reading a body byte, and ``asgi_app`` counts what it reads before the quick path or the SDK.

SDK facts relied on (mcp 2.3.0, read from the installed source):
- ``mcp.server.lowlevel.Server(name, on_list_tools=..., on_call_tool=...)``; handlers are
  ``async (ctx: ServerRequestContext, params) -> result``.
- ``ctx.request`` is the ``starlette.requests.Request`` of the HTTP request that carried the
  JSON-RPC message (``ServerMessageMetadata.request_context``, set by the stateful transport per
  POST and by the 2026-07-28 single-exchange path), so ``ctx.request.scope`` holds what the
  Tornado side injected. Handlers run in the manager's task group, not in the request's task,
  so contextvars set by the request do not reach them; the scope does.
- ``StreamableHTTPSessionManager(app, json_response, stateless, security_settings,
  session_idle_timeout, max_request_body_size, max_sessions)``; ``run()`` is an async context
  manager usable once per instance; ``handle_request(scope, receive, send)`` is the ASGI entry
  and raises ``RuntimeError`` before ``run()``.
- Stateful sessions record ``authorization_context(scope["user"])`` (client_id, issuer, subject
  of ``AccessToken``) when ``scope["user"]`` is an ``AuthenticatedUser`` and answer 404 when a
  later request for the session carries a different one.
- Requests whose ``MCP-Protocol-Version`` header is not a handshake-era version go to the
  stateless 2026-07-28 path (no ``initialize``, no session); ``mcp.client.Client`` defaults to
  it (``mode="auto"``), ``ClientSession.initialize()`` uses the handshake. Both reach the same
  handlers. The modern path calls the ``tools/list`` handler to validate ``Mcp-Param-*``
  headers of a ``tools/call`` with arguments.
- ``TransportSecuritySettings(enable_dns_rebinding_protection, allowed_hosts, allowed_origins)``
  with ``"host:*"`` port wildcards; ``TransportSecurityMiddleware.validate_request`` answers 421
  for a bad Host and 403 for a bad Origin; an absent Origin passes (non-browser clients).
- ``ctx.session.report_progress(progress, total, message)`` emits ``notifications/progress``
  for the request being handled and is a no-op without a client progress token;
  ``mcp.shared.jsonrpc_dispatcher.progress_token_from_params`` reads that token.
- ``DELETE`` with the session's ``Mcp-Session-Id`` and its creator's ``scope["user"]``
  terminates the session (its streams end, later requests get 404); the manager forgets it.
- The low-level server passes every ``tools/call`` to ``on_call_tool`` without checking the name
  against the tool list; the endpoint forwards all of them to ``gateway.call``.
- ``CallToolResult(content=[TextContent(text=...)], structured_content=..., is_error=...)``;
  ``Tool(name, description, input_schema, output_schema, annotations=ToolAnnotations(...))``;
  mcp_types models accept camelCase aliases (``readOnlyHint``) and snake_case names.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_SESSION_IDLE_TIMEOUT,
    StreamableHTTPSessionManager,
)
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import Message, Receive, Scope, Send

from llmgw_jupyter.errors import GatewayError
from llmgw_jupyter.server.mcp_quick import QuickCalls
from llmgw_jupyter.server.mcp_sessions import SessionLedger, SessionRefusal

log = logging.getLogger(__name__)

CALLER_SCOPE_KEY = "llmgw.caller"
"""ASGI scope key under which the Tornado handler puts the authenticated caller."""

LOCAL_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")
LOCAL_ORIGINS = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SESSION_HEADER = b"mcp-session-id"
_VERSION_HEADER = b"mcp-protocol-version"
_HANDSHAKE = frozenset(v.encode() for v in HANDSHAKE_PROTOCOL_VERSIONS)
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


class ToolResult(Protocol):
    """The outcome of one call; denials and tool failures are results with ``is_error``."""

    @property
    def is_error(self) -> bool: ...
    @property
    def text(self) -> str: ...
    @property
    def structured(self) -> dict[str, Any] | None: ...


class Gateway(Protocol):
    """What the endpoint needs from ``llmgw_jupyter.gateway.Gateway`` (``list_tools`` may be
    sync or async)."""

    def list_tools(self, caller: Any) -> Sequence[ToolSpec] | Awaitable[Sequence[ToolSpec]]: ...

    async def call(
        self,
        tool_name: str,
        arguments: dict[str, Any],
        caller: Any,
        progress: ProgressFn | None = None,
    ) -> ToolResult: ...


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

    @property
    def running(self) -> bool:
        return self._ready.is_set() and self._task is not None and not self._task.done()

    async def run(self) -> None:
        """Enter the session manager and stay in it until cancelled."""
        async with self.session_manager.run():
            self._ready.set()
            try:
                await asyncio.Event().wait()
            finally:
                self._ready.clear()

    async def start(self) -> None:
        """Start ``run()`` in a long-lived task and return once requests can be served."""
        if self._task is not None:
            raise RuntimeError("MCP endpoint already started (the SDK manager runs once)")
        self._task = asyncio.create_task(self.run(), name="llmgw-mcp-session-manager")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._task.done():
            self._task.result()  # re-raise the start-up failure

    async def stop(self) -> None:
        """Cancel the manager task: open sessions and streams end, in-flight calls are cancelled."""
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

    def body_too_large(self) -> ASGIApp:
        return body_too_large(self.max_body_bytes, self._setting_of(BODY_LIMIT))

    async def asgi_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Header checks, the capped body, the session ledger, then the quick path or the SDK."""
        if scope["type"] != "http":
            return
        refusal = await self.refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        body = await _read_body(receive, self.max_body_bytes)
        if body is None:
            await self.body_too_large()(scope, receive, send)
            return
        receive = _replay_body(body, receive)
        caller = scope[CALLER_SCOPE_KEY]
        key = self._caller_key(caller)
        scope["user"] = _user(key)
        if self.sessions is None or not _handshake_era(scope):
            await self._serve(scope, receive, send, caller)
            return
        session_header = _header(scope, _SESSION_HEADER)
        if session_header is None:
            await self._open_session(scope, receive, send, caller, key)
            return
        status: int | None = None

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.sessions.begin(session_header)
        try:
            await self._serve(scope, receive, watch, caller)
        finally:
            self.sessions.end(session_header, key, str(scope.get("method")), status)

    async def _open_session(
        self, scope: Scope, receive: Receive, send: Send, caller: Any, key: str
    ) -> None:
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
            await self._serve(scope, receive, watch, caller)
        finally:
            self.sessions.opened(key, opened, (_header(scope, b"host") or "").encode("latin-1"))

    def _session_limit(self, refused: SessionRefusal) -> ASGIApp:
        return limit_response(
            429,
            f"{refused.message}; close sessions you no longer use (HTTP DELETE with their "
            f"Mcp-Session-Id) or ask the server's owner to raise "
            f"{self._setting_of(refused.limit)}",
            refused.limit,
            refused.maximum,
        )

    async def _serve(self, scope: Scope, receive: Receive, send: Send, caller: Any) -> None:
        if self.quick is not None:  # a call that streams nothing: answered as plain JSON
            replay = await self.quick.serve(scope, receive, send, caller)
            if replay is None:
                return
            receive = replay
        await self.session_manager.handle_request(scope, receive, send)

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
            if not self.running:
                continue
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
                continue
            if status is not None and status < 300:
                closed += 1
        return closed


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


def _user(key: str) -> AuthenticatedUser:
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


async def _read_body(receive: Receive, limit: int) -> bytes | None:
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


def _replay_body(body: bytes, receive: Receive) -> Receive:
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
    ``max_grant_sessions``, on top of that room, so grants never crowd the owner out.
    ``setting_of`` turns a limit's name into how its value is changed, for refusal messages.
    """

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        specs = await _tools_for(gateway, _caller_of(ctx))
        return types.ListToolsResult(tools=[_to_tool(spec) for spec in specs])

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = _caller_of(ctx)
        # Every call reaches the gateway, listed or not: it refuses unknown and hidden tools
        # itself ([POLICY DENIED] for hidden ones) and audits the attempt.
        progress: ProgressFn | None = None
        if progress_token_from_params(ctx.params) is not None:
            progress = ctx.session.report_progress
        try:
            result = await gateway.call(params.name, params.arguments or {}, caller, progress)
        except GatewayError as exc:
            return _error_result(exc.message, {"error": exc.to_dict()})
        return _to_call_result(result)

    async def quick_call(name: str, arguments: dict[str, Any], caller: Any) -> dict[str, Any]:
        try:
            result = await gateway.call(name, arguments, caller, None)
        except GatewayError as exc:
            return _error_result(exc.message, {"error": exc.to_dict()}).model_dump(
                by_alias=True, exclude_none=True, mode="json"
            )
        return wire_call_result(result)

    server: Server[Any] = Server(
        name,
        version=version,
        instructions=instructions,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=dns_rebinding_protection,
        allowed_hosts=list(allowed_hosts),
        allowed_origins=list(allowed_origins),
    )
    ledger = None
    sdk_max_sessions = max_sessions
    if not stateless:
        ledger = SessionLedger(
            per_grant=max_sessions_per_grant,
            all_grants=max_grant_sessions,
            idle_timeout=session_idle_timeout,
            is_grant=is_grant,
        )
        if max_sessions is not None:
            # The grants' sessions come on top of the owner's room; uncapped grants: no SDK cap.
            grants = max_grant_sessions
            sdk_max_sessions = None if grants is None else max_sessions + grants
    manager = StreamableHTTPSessionManager(
        app=server,
        json_response=json_response,
        stateless=stateless,
        security_settings=security,
        session_idle_timeout=session_idle_timeout,
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
    )
    if quick_tools is not None:
        endpoint.quick = QuickCalls(manager, quick_call, quick_tools)
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


def _to_call_result(result: ToolResult) -> types.CallToolResult:
    text = result.text
    if not text and result.structured is not None:
        text = json.dumps(result.structured)  # spec: structured content also goes out as text
    return types.CallToolResult(
        content=[types.TextContent(text=text)],
        structured_content=result.structured,
        is_error=result.is_error,
    )


def wire_call_result(result: ToolResult) -> dict[str, Any]:
    """``_to_call_result(result)`` in its JSON wire form, built directly (the quick path's hot
    spot; a test keeps the two equal)."""
    text = result.text
    if not text and result.structured is not None:
        text = json.dumps(result.structured)
    wire: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if result.structured is not None:
        wire["structuredContent"] = result.structured
    wire["isError"] = result.is_error
    return wire


def _error_result(message: str, structured: dict[str, Any] | None = None) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=message)], structured_content=structured, is_error=True
    )

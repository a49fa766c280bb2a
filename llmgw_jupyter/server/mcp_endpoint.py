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
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import Receive, Scope, Send

from llmgw_jupyter.errors import GatewayError
from llmgw_jupyter.server.mcp_quick import QuickCalls

log = logging.getLogger(__name__)

CALLER_SCOPE_KEY = "llmgw.caller"
"""ASGI scope key under which the Tornado handler puts the authenticated caller."""

LOCAL_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")
LOCAL_ORIGINS = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]


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
    ) -> None:
        self.server = server
        self.session_manager = manager
        self._security = TransportSecurityMiddleware(security)
        self._caller_key = caller_key
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.quick: QuickCalls | None = None  # set by build_mcp_app(quick_tools=...)

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

    async def asgi_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Host/Origin check, caller check, then the SDK."""
        if scope["type"] != "http":
            return
        refusal = await self._security.validate_request(Request(scope), is_post=False)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if CALLER_SCOPE_KEY not in scope:
            response = JSONResponse(
                {"error": "invalid_token", "error_description": "Authentication required"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        if not self.running:
            await PlainTextResponse("MCP endpoint not running", status_code=503)(
                scope, receive, send
            )
            return
        key = self._caller_key(scope[CALLER_SCOPE_KEY])
        scope["user"] = AuthenticatedUser(AccessToken(token="", client_id=key, scopes=[]))
        if self.quick is not None:  # a call that streams nothing: answered as plain JSON
            replay = await self.quick.serve(scope, receive, send, scope[CALLER_SCOPE_KEY])
            if replay is None:
                return
            receive = replay
        await self.session_manager.handle_request(scope, receive, send)


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
) -> MCPEndpoint:
    """Build the endpoint; call ``await endpoint.start()`` before serving ``endpoint.asgi_app``.

    ``allowed_hosts``/``allowed_origins`` take exact values or ``"host:*"`` port wildcards (see
    ``LOCAL_HOSTS``/``LOCAL_ORIGINS``); behind a proxy add its public host and origin.
    ``caller_key`` turns a caller into the identity a session is bound to. ``quick_tools`` names
    the tools (answering at once) whose calls without a progress token may skip the SSE response
    (``mcp_quick``).
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
    manager = StreamableHTTPSessionManager(
        app=server,
        json_response=json_response,
        stateless=stateless,
        security_settings=security,
        session_idle_timeout=session_idle_timeout,
        max_request_body_size=max_request_body_size,
        max_sessions=max_sessions,
    )
    endpoint = MCPEndpoint(server, manager, security, caller_key)
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

"""The opt-in direct MCP listener: the same endpoint on a loopback port of its own, outside Tornado.

Why: measured under load, Tornado's own request cycle (parsing, routing, handler set-up, finish,
Jupyter's access log) is about half of an MCP status call's server CPU, and alone costs more
than the issue-10 budget (half of what Jupyter's ``/api/status`` costs per call) before the tool
runs. No handler inside Jupyter's Tornado can get under it. This listener serves the same MCP
endpoint with uvicorn and its ``httptools`` parser, as a task on Jupyter's own event loop in the
same process: the same ``GatewayService`` (gateway, caller auth with its revocation-safe token
cache, session ledger, policy, ``tools/list_changed``), a second door to it.

Opt in with ``c.LLMGatewayApp.mcp_direct_port`` (0: a free port; the server log says which).
Loopback only (``mcp_direct_host``: 127.0.0.1, ::1 or localhost; anything else is refused at
start with an error in the server log, and the listener stays off): it is not under Jupyter's
``base_url`` and not behind JupyterHub's or any other proxy, so it is for agents on the same
machine. The URL is ``http://<host>:<port>/mcp``.

What every request must pass here, before a body byte is read, with the answers the Tornado path
gives: exactly one ``Host``, and it names this listener (its loopback address or ``localhost``,
with its port: 421 otherwise; DNS rebinding protection), at most one ``Origin``, and a loopback one
if any (403); exactly one bearer token, the owner's (the Jupyter server's token, as on
``/llmgw/mcp``) or a live grant's (401 otherwise); the declared length within
``max_mcp_body_bytes`` (413, and the body is counted as it arrives too). Then the requests the
quick path takes (``mcp_quick``: ``tools/call`` of a quick tool without a progress token, ``ping``,
in a session of the same caller) are answered here, without an ASGI hop into Starlette or the SDK;
everything else goes to ``MCPEndpoint.asgi_app`` unchanged (``initialize``, ``tools/list``,
streaming calls, GET streams, DELETE, cancellation, the stateless 2026-07-28 path, refusals).
One difference: a quick call whose client goes away runs to its end here (the Tornado path
cancels it after a grace); quick tools answer at once, unless an owner policy makes them wait for
an approval.

uvicorn runs embedded: no signal handlers (Jupyter owns SIGINT/SIGTERM in this process), no
logging set-up and no access log, no lifespan, no proxy headers, no websockets. The socket is
bound and listening before the server task starts, so a bind failure is reported at once and the
port answers as soon as ``start`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterator, MutableMapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.types import Receive, Scope, Send

from llmgw_jupyter.server.handlers import ACTIVITY_KEY
from llmgw_jupyter.server.mcp_endpoint import (
    CALLER_SCOPE_KEY,
    PRECHECKED_SCOPE_KEY,
    MCPEndpoint,
    json_message,
    read_body,
    replay_body,
    unauthenticated,
)
from llmgw_jupyter.server.mcp_quick import EVENT_STREAM_HEADERS, SESSION_HEADER
from llmgw_jupyter.server.service import GatewayService
from llmgw_jupyter.tools import Caller

log = logging.getLogger(__name__)

PATH = "/mcp"
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")
STOP_TIMEOUT = 10.0  # seconds stop() waits for uvicorn before cancelling its task
_GRACEFUL_SECONDS = 2  # open requests uvicorn lets finish on stop (streams ended before)
_START_STEPS = 500  # bounded wait for uvicorn's start-up (10 ms apart)
_MAX_PASSING_ORIGINS = 64
_JSON_HEADERS = [(b"content-type", b"application/json")]
_STREAM_HEADERS = [(k.lower().encode(), v.encode()) for k, v in EVENT_STREAM_HEADERS]


def loopback_host(value: str) -> str:
    """``value`` if it names a loopback address this listener may bind; ValueError otherwise."""
    host = value.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in LOOPBACK_NAMES:
        return host
    raise ValueError(
        f"mcp_direct_host: {value!r} is not allowed; the direct MCP listener serves loopback only "
        f"(one of {', '.join(LOOPBACK_NAMES)}): it is outside Jupyter's base_url, proxy and "
        "browser-session checks, so it must not be reachable from other machines"
    )


def loopback_origin(origin: str) -> bool:
    """An ``Origin`` of a page served from this machine (any port), http or https."""
    try:
        parts = urlsplit(origin)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or hostname is None:
        return False
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


class DirectMCPApp:
    """The ASGI app on the direct port: header checks, the quick path, else the endpoint."""

    def __init__(
        self,
        service: GatewayService,
        hosts: frozenset[str],
        settings: MutableMapping[str, Any] | None = None,
    ) -> None:
        self.service = service
        self.hosts = hosts  # the Host values naming this listener, e.g. "127.0.0.1:8123"
        self._settings = settings  # Jupyter's web app settings: the activity stamp
        self._passing_origins: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] not in (PATH, PATH + "/"):
            await _plain(send, 404, f"not found: the MCP endpoint on this port is {PATH}")
            return
        headers: dict[str, str] = {}
        hosts = origins = credentials = 0
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1")
            if name == "host":
                hosts += 1
            elif name == "origin":
                origins += 1
            elif name == "authorization":
                credentials += 1
            headers[name] = raw_value.decode("latin-1")
        if hosts != 1 or headers["host"] not in self.hosts:
            await _plain(send, 421, "Invalid Host header")
            return
        origin = headers.get("origin")
        if origins > 1 or (origin is not None and not self._origin_passes(origin)):
            await _plain(send, 403, "Invalid Origin header")
            return
        service = self.service
        caller = service.mcp_caller(headers.get("authorization")) if credentials == 1 else None
        if caller is None:  # none, a wrong one, or two (ambiguous)
            await unauthenticated()(scope, receive, send)
            return
        if self._settings is not None:  # an agent at work keeps an idle-culled server alive
            self._settings[ACTIVITY_KEY] = datetime.now(timezone.utc)
        scope[CALLER_SCOPE_KEY] = caller
        endpoint = service.mcp
        if endpoint is None or not endpoint.running or service.state != "running":
            await service.mcp_asgi(scope, receive, send)  # refuses, as on /llmgw/mcp
            return
        declared = headers.get("content-length")
        if declared is not None and not (
            declared.isdigit() and int(declared) <= endpoint.max_body_bytes
        ):
            await endpoint.body_too_large()(scope, receive, send)
            return
        scope[PRECHECKED_SCOPE_KEY] = True  # Host/Origin, caller, running, length: all passed
        if scope["method"] == "POST":
            body = await read_body(receive, endpoint.max_body_bytes)
            if body is None:
                await endpoint.body_too_large()(scope, receive, send)
                return
            if await _answer_quick(endpoint, body, headers, caller, send):
                return
            receive = replay_body(body, receive)
        await endpoint.asgi_app(scope, receive, send)

    def _origin_passes(self, origin: str) -> bool:
        if origin in self._passing_origins:
            return True
        if not loopback_origin(origin):
            return False
        if len(self._passing_origins) >= _MAX_PASSING_ORIGINS:
            self._passing_origins.clear()
        self._passing_origins.add(origin)
        return True


async def _answer_quick(
    endpoint: MCPEndpoint, body: bytes, headers: dict[str, str], caller: Caller, send: Send
) -> bool:
    """Answer a POST on the quick path (``mcp_quick``) if it qualifies; True if it was answered."""
    message = json_message(body)
    key = caller.key
    session_id = endpoint.quick_session("POST", headers.get, message, key)
    if session_id is None:
        return False
    assert message is not None
    answer = await endpoint.answer_quick(session_id, message, caller, key)
    session = [(SESSION_HEADER.encode(), session_id.encode("latin-1"))]
    if answer is None:  # cancelled: no JSON-RPC response, an empty event stream
        await send(
            {"type": "http.response.start", "status": 200, "headers": session + _STREAM_HEADERS}
        )
        await send({"type": "http.response.body", "body": b""})
        return True
    length = [(b"content-length", b"%d" % len(answer))]
    start = {"type": "http.response.start", "status": 200}
    await send({**start, "headers": session + _JSON_HEADERS + length})
    await send({"type": "http.response.body", "body": answer})
    return True


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode("utf-8")
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server without its signal handlers: Jupyter owns SIGINT/SIGTERM here."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class DirectListener:
    """A running direct listener: where it is, and how it stops."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], url: str, port: int):
        self._server = server
        self._task = task
        self.url = url
        self.port = port

    @classmethod
    async def start(
        cls,
        service: GatewayService,
        host: str,
        port: int,
        settings: MutableMapping[str, Any] | None = None,
    ) -> DirectListener:
        """Bind ``host:port`` (loopback only; port 0 = a free one) and serve until ``stop``."""
        host = loopback_host(host)
        address = "127.0.0.1" if host == "localhost" else host
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on accepted sockets that say so, and
        # uvicorn writes a response's head and body apart (Nagle: +40 ms a request otherwise).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
        bound = int(sock.getsockname()[1])
        literal = f"[{address}]" if ":" in address else address
        hosts = frozenset({f"{literal}:{bound}", f"localhost:{bound}"})
        app = DirectMCPApp(service, hosts, settings)
        config = uvicorn.Config(
            app,
            http="httptools",
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=False,
            timeout_graceful_shutdown=_GRACEFUL_SECONDS,
        )
        server = _EmbeddedServer(config)
        try:
            config.load()  # an import failure (httptools missing) is raised here, not in a task
        except BaseException:
            sock.close()
            raise
        task = asyncio.create_task(server.serve(sockets=[sock]), name="llmgw-mcp-direct")
        for _ in range(_START_STEPS):  # start-up is a few loop steps; bounded
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            sock.close()
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError(f"the direct MCP listener did not start: {task.exception()}")
            raise RuntimeError("the direct MCP listener did not start")
        return cls(server, task, f"http://{literal}:{bound}{PATH}", bound)

    async def stop(self) -> None:
        """Stop accepting, let open requests end (bounded), close every connection."""
        if self._task.done():
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def start_direct_listener(
    service: GatewayService,
    host: str,
    port: int,
    settings: MutableMapping[str, Any] | None = None,
    logger: logging.Logger | logging.LoggerAdapter[Any] = log,
) -> DirectListener | None:
    """The listener for ``LLMGatewayApp``, or None (logged to ``logger``, the server's log)
    when there is nothing to serve or the port cannot be bound: the MCP endpoint under Jupyter's
    ``base_url`` is unaffected."""
    try:
        loopback_host(host)
    except ValueError as refused:
        # Refused here, not by a trait validator: a TraitError while Jupyter links the
        # extension leaves it running with none of its configuration applied.
        logger.error("llmgw: direct MCP listener refused: LLMGatewayApp.%s", refused)
        return None
    if service.state != "running" or service.mcp is None:
        logger.warning("llmgw: direct MCP listener not started: the MCP endpoint is not served")
        return None
    try:
        listener = await DirectListener.start(service, host, port, settings)
    except Exception as error:  # a port in use, httptools missing, ...: said, not fatal
        logger.error(
            "llmgw: direct MCP listener on %s port %s did not start: %s", host, port, error
        )
        return None
    logger.info(
        "llmgw: direct MCP listener at %s (loopback only; bearer token as on the Jupyter URL)",
        listener.url,
    )
    return listener


__all__ = [
    "PATH",
    "DirectListener",
    "DirectMCPApp",
    "loopback_host",
    "loopback_origin",
    "start_direct_listener",
]

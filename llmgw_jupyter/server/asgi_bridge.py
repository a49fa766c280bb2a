"""Serve an ASGI 3 app from a Tornado handler, streaming the response.

Why: the MCP SDK ships an ASGI app, but the gateway must live inside Jupyter's own Tornado on the
Jupyter port. Authentication happens in Tornado (``prepare``) and reaches the app through extra
scope keys. Every ``http.response.body`` chunk is written and flushed at once, so Server-Sent
Events reach the client while the app is still running.

Semantics (ASGI HTTP spec 2.3, as uvicorn does it):
- the request body (already read by Tornado) arrives as one ``http.request`` message; a subclass
  that streams the body itself (``@stream_request_body``) hands it over in ``request_body()``;
- after that, ``receive()`` waits until the client disconnects or the response is complete and
  then answers ``http.disconnect``;
- ``send()`` after a disconnect is a no-op; if the app has not returned ``disconnect_grace``
  seconds after the disconnect, it is cancelled;
- an app exception before ``http.response.start`` answers 500; after it, the connection is
  closed so the client sees a truncated response instead of a false success.

Tornado applies ``xsrf_cookies`` to POSTs before ``prepare``; a subclass serving bearer-token
API clients (MCP) decides whether to override ``check_xsrf_cookie``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

from tornado.web import RequestHandler

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Hop-by-hop headers belong to Tornado's own framing (it chunks when no Content-Length is set).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade"})


class ASGIHandler(RequestHandler):
    """Forward any request to an ASGI app; route it with ``(pattern, ASGIHandler, {"app": app})``.

    Subclasses authenticate in ``prepare`` and return per-request scope keys from
    ``asgi_scope_extras`` (e.g. ``{"llmgw.caller": caller}`` or ``{"state": {...}}``).
    """

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def initialize(
        self,
        app: ASGIApp,
        root_path: str = "",
        scope_extras: dict[str, Any] | None = None,
        disconnect_grace: float = 5.0,
    ) -> None:
        self.asgi_app = app
        self.asgi_root_path = root_path.rstrip("/")
        self._static_extras = scope_extras or {}
        self.disconnect_grace = disconnect_grace
        self._disconnected = asyncio.Event()
        self._response_started = False
        self._scope: Scope | None = None
        self._app_task: asyncio.Future[None] | None = None

    def asgi_scope_extras(self) -> dict[str, Any]:
        """Per-request scope keys merged last into the scope; override after auth in ``prepare``."""
        return dict(self._static_extras)

    def compute_etag(self) -> str | None:
        """The app owns caching headers; Tornado must not turn its answers into 304s."""
        return None

    def on_connection_close(self) -> None:
        self._disconnected.set()
        task = self._app_task
        if task is not None and not task.done():
            # The app got http.disconnect; if it has not wound down after the grace, cancel it.
            asyncio.get_running_loop().call_later(self.disconnect_grace, task.cancel)
        super().on_connection_close()  # ends a streamed body's wait (``@stream_request_body``)

    def request_body(self) -> bytes:
        """The body the app receives; Tornado's buffered one unless a subclass streams it."""
        return self.request.body or b""

    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self._forward()

    head = post = delete = patch = put = options = get

    def build_scope(self) -> Scope:
        """The ASGI scope for this request; ``path`` includes ``root_path`` (ASGI 3 rule).

        Built once per request (a refusal in ``prepare`` and the forwarded request share it), so
        a subclass calls it only once ``asgi_scope_extras`` can answer (after authenticating).
        """
        if self._scope is not None:
            return self._scope
        req = self.request
        raw_path = req.path.encode("latin-1")
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in req.headers.get_all()
        ]
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": req.version.removeprefix("HTTP/"),
            "method": req.method,
            "scheme": req.protocol,
            "path": unquote(req.path),
            "raw_path": raw_path,
            "root_path": self.asgi_root_path,
            "query_string": req.query.encode("latin-1"),
            "headers": headers,
            "client": self._client_address(),
            "server": self._server_address(),
            "state": {},
        }
        scope.update(self.asgi_scope_extras())
        self._scope = scope
        return scope

    def _client_address(self) -> tuple[str, int] | None:
        address = getattr(getattr(self.request.connection, "context", None), "address", None)
        if isinstance(address, tuple) and len(address) >= 2:
            return (str(self.request.remote_ip), int(address[1]))
        return (str(self.request.remote_ip), 0) if self.request.remote_ip else None

    def _server_address(self) -> tuple[str, int | None] | None:
        stream = getattr(self.request.connection, "stream", None)
        sock: socket.socket | None = getattr(stream, "socket", None)
        if sock is not None:
            try:
                name = sock.getsockname()
            except OSError:
                name = None
            if isinstance(name, tuple):
                return (str(name[0]), int(name[1]))
        host, _, port = self.request.host.rpartition(":")
        return (host, int(port)) if host and port.isdigit() else None

    async def _forward(self) -> None:
        scope = self.build_scope()
        body_sent = False

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": self.request_body(), "more_body": False}
            await self._disconnected.wait()
            return {"type": "http.disconnect"}

        # One task per request and no watcher task: a disconnect (``on_connection_close``)
        # schedules the app's cancellation after ``disconnect_grace`` seconds.
        app_task = self._app_task = asyncio.ensure_future(
            self.asgi_app(scope, receive, self._send)
        )
        if self._disconnected.is_set():  # gone before the app started
            asyncio.get_running_loop().call_later(self.disconnect_grace, app_task.cancel)
        try:
            await app_task
        except asyncio.CancelledError:
            if not app_task.cancelled():
                raise
            if not self._disconnected.is_set():  # our own task was cancelled, not the app
                raise
            log.debug("ASGI app cancelled after client disconnect: %s", self.request.path)
        except Exception:
            self._on_app_error()
        finally:
            if not app_task.done():  # our own task was cancelled: take the app down with us
                app_task.cancel()
        if not self._finished and not self._disconnected.is_set():
            if self._response_started:
                log.error(
                    "ASGI app returned without completing its response: %s", self.request.path
                )
                self._abort()
            else:
                self._fail_500()

    async def respond_with(self, response: ASGIApp) -> None:
        """Answer with a one-shot ASGI response (a refusal) without reading the request body.

        Tornado then closes the connection rather than read the body; ``Connection: close``
        says so, or a client could send its next request on a connection that is closing.
        """

        async def no_body() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        self.set_header("Connection", "close")
        await response(self.build_scope(), no_body, self._send)

    async def _send(self, message: Message) -> None:
        if self._disconnected.is_set() or self._finished:
            return  # spec 2.3 (and uvicorn): sends after disconnect/completion are ignored
        kind = message["type"]
        if kind == "http.response.start":
            if self._response_started:
                raise RuntimeError("http.response.start sent twice")
            self._response_started = True
            self.set_status(int(message["status"]))
            self.clear_header("Content-Type")
            for raw_name, raw_value in message.get("headers", ()):
                name = _text(raw_name)
                if name.lower() not in _HOP_BY_HOP:
                    self.add_header(name, _text(raw_value))
        elif kind == "http.response.body":
            if not self._response_started:
                raise RuntimeError("http.response.body sent before http.response.start")
            body = bytes(message.get("body", b""))
            if body:
                self.write(body)
            if message.get("more_body", False):
                try:
                    await self.flush()
                except OSError:  # StreamClosedError is an OSError: the client went away
                    self._disconnected.set()
            else:
                self._disconnected.set()  # response complete: pending receive() gets disconnect
                try:
                    await self.finish()
                except OSError:
                    log.debug("client went away before the response was sent")
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r}")

    def _on_app_error(self) -> None:
        log.exception("ASGI app failed: %s %s", self.request.method, self.request.path)
        if self._finished or self._disconnected.is_set():
            return
        if self._response_started:
            self._abort()
        else:
            self._fail_500()

    def _fail_500(self) -> None:
        self.clear()
        self.set_status(500)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("Internal Server Error")

    def _abort(self) -> None:
        """Close the connection mid-response so the client cannot mistake it for a full answer."""
        self._disconnected.set()
        assert self.request.connection is not None
        self.request.connection.close()  # type: ignore[attr-defined]
        # Tornado's auto-finish afterwards writes to a closed stream, which it tolerates.


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value

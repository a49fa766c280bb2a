"""What the mock model APIs (Anthropic Messages, OpenAI Responses) share: a threaded loopback HTTP
server that stops without hanging, a request log tests can wait on, standing and one-shot
behaviours, a handler pause that a stop or a client hang-up interrupts, the ``[mock:...]`` and
``[mock-shell]`` prompt directives, and the command line that serves a mock.

Each mock adds its routes, its wire format and its behaviour dataclass; nothing here knows either
API.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import re
import select
import signal
import socket
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "DirectiveError",
    "MockHTTPServer",
    "MockHandler",
    "MockServer",
    "parse_directive_fields",
    "serve_main",
    "server_arguments",
    "shell_command",
    "sse",
]

log = logging.getLogger(__name__)

_DIRECTIVE_RE = re.compile(r"\[mock:([^\]]*)\]")
_SHELL_RE = re.compile(r"\[mock-shell\](.*?)\[/mock-shell\]", re.DOTALL)


class DirectiveError(ValueError):
    """A ``[mock:...]`` directive that cannot be understood (answered with HTTP 400)."""


def parse_directive_fields(text: str, kinds: Mapping[str, type]) -> dict[str, Any]:
    """Parse every ``[mock:key=value,...]`` directive in ``text`` into behaviour fields of
    the types in ``kinds``, with the bounds both mocks share (``steps`` >= 1, ``fail`` 4xx/5xx).

    A bare key (``[mock:drop]``) means true. Unknown keys or bad values raise DirectiveError so
    a typo fails loudly instead of being ignored.
    """
    fields: dict[str, Any] = {}
    for match in _DIRECTIVE_RE.finditer(text):
        for part in match.group(1).split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, raw = part.partition("=")
            key, raw = key.strip(), raw.strip()
            kind = kinds.get(key)
            if kind is None:
                raise DirectiveError(f"unknown mock directive {key!r}")
            try:
                if kind is bool:
                    value: Any = (not sep) or raw.lower() in ("1", "true", "yes", "on")
                else:
                    value = kind(raw)
            except ValueError as exc:
                raise DirectiveError(f"bad value for mock directive {key!r}: {raw!r}") from exc
            fields[key] = value
    if fields.get("steps", 1) < 1:
        raise DirectiveError("mock directive 'steps' must be >= 1")
    if not 400 <= fields.get("fail", 400) <= 599:
        raise DirectiveError("mock directive 'fail' must be an HTTP error status (400-599)")
    return fields


def shell_command(prompt: str) -> str | None:
    """The command of a ``[mock-shell]...[/mock-shell]`` block in a prompt, if any."""
    match = _SHELL_RE.search(prompt)
    return match.group(1) if match else None


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event named after the event's ``type``."""
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


BehaviourT = TypeVar("BehaviourT", bound="DataclassInstance")  # a frozen dataclass
RequestT = TypeVar("RequestT")
OwnerT = TypeVar("OwnerT", bound="MockServer[Any, Any]")
ServerT = TypeVar("ServerT", bound="MockServer[Any, Any]")


class MockHTTPServer(ThreadingHTTPServer, Generic[OwnerT]):
    """ThreadingHTTPServer that remembers open connections so stop() can cut them."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self, owner: OwnerT, host: str, port: int, handler: type[BaseHTTPRequestHandler]
    ) -> None:
        self.owner = owner
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__((host, port), handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.owner.stopping:
            return  # connections cut by stop() fail in their handlers: expected
        log.exception("mock server: error while handling a request from %s", client_address)

    def cut_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class MockHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler plumbing both mocks use: chunked writes and an interruptible pause."""

    protocol_version = "HTTP/1.1"
    server: MockHTTPServer[Any]

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("mock %s: " + format, self.address_string(), *args)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; False when the server stops or the client hangs up first."""
        owner = self.server.owner
        deadline = time.monotonic() + seconds
        while not owner.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            try:
                ready, _, _ = select.select([self.connection, owner.wake_fd], [], [], remaining)
            except (OSError, ValueError):
                return False  # the wake socket or the connection was closed by stop()
            if self.connection in ready:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return False  # client closed its side
                except OSError:
                    return False
                # Unexpected bytes from the client: fall back to waiting on the stop flag.
                return owner.wait_stopping(remaining)
        return False


class MockServer(Generic[BehaviourT, RequestT]):
    """Lifecycle, behaviours and request log of a mock: ``start()``/``stop()`` or ``with``.

    A subclass names its handler and thread, builds its behaviour dataclass (``new_behaviour``)
    and parses its ``[mock:...]`` directives (``parse_directives``); a ``[mock-shell]`` block
    becomes the ``shell`` override for every mock.
    """

    handler_class: ClassVar[type[MockHandler]]
    thread_name: ClassVar[str]

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, behaviour: BehaviourT | None = None
    ) -> None:
        self._host = host
        self._port = port
        self.behaviour: BehaviourT = behaviour or self.new_behaviour()
        """Applies to every request (after any queued one-shot behaviours)."""
        self._queued: list[BehaviourT] = []
        self._requests: list[RequestT] = []
        self._cond = threading.Condition()
        self._counter = 0
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._httpd: MockHTTPServer[Any] | None = None
        self._thread: threading.Thread | None = None

    def new_behaviour(self, **fields: Any) -> BehaviourT:
        """The behaviour dataclass with these fields (none: the default, echo without delay)."""
        raise NotImplementedError

    def parse_directives(self, prompt: str) -> dict[str, Any]:
        """This mock's ``[mock:...]`` directives as behaviour fields; DirectiveError if wrong."""
        raise NotImplementedError

    def prompt_overrides(self, prompt: str) -> dict[str, Any]:
        """Behaviour fields a prompt sets: its directives, and a ``[mock-shell]`` command."""
        overrides = self.parse_directives(prompt)
        command = shell_command(prompt)
        if command is not None:
            overrides["shell"] = command
        return overrides

    # -- lifecycle --------------------------------------------------------------------------

    def start(self: ServerT) -> ServerT:
        """Bind (port 0 = a free port) and serve from a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("mock server already started")
        if self._stopping.is_set():
            raise RuntimeError("a stopped mock server cannot be restarted")
        self._httpd = MockHTTPServer(self, self._host, self._port, self.handler_class)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; wakes sleeping handlers and cuts open connections, never hangs."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.cut_connections()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self: ServerT) -> ServerT:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("mock server not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """What a CLI is pointed at (the API's base URL)."""
        raise NotImplementedError

    # -- behaviour --------------------------------------------------------------------------

    def set_behaviour(self, **fields: Any) -> BehaviourT:
        """Replace the standing behaviour: ``set_behaviour(delay=5)``; no arguments resets it."""
        self.behaviour = self.new_behaviour(**fields)
        return self.behaviour

    def queue_behaviour(self, **fields: Any) -> None:
        """Use this behaviour for the next model request only (queued in order), e.g. one
        failure."""
        with self._cond:
            self._queued.append(self.new_behaviour(**fields))

    def behaviour_for(self, prompt: str) -> BehaviourT:
        """The behaviour for one request: queued or standing one, then prompt directives."""
        with self._cond:
            base = self._queued.pop(0) if self._queued else self.behaviour
        overrides = self.prompt_overrides(prompt)
        return dataclasses.replace(base, **overrides) if overrides else base

    # -- request log ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestT]:
        """A snapshot of every request received so far, oldest first."""
        with self._cond:
            return list(self._requests)

    def record(self, request: RequestT) -> None:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[RequestT]:
        """Block until at least ``n`` requests were received; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout=timeout):
                raise TimeoutError(
                    f"mock server got {len(self._requests)} request(s), expected {n} "
                    f"within {timeout} s"
                )
            return list(self._requests)

    def clear(self) -> None:
        """Forget logged requests and reset the behaviour to the default (echo, no delay)."""
        with self._cond:
            self._requests.clear()
            self._queued.clear()
            self.behaviour = self.new_behaviour()

    def next_id(self, prefix: str) -> str:
        """A fresh id such as ``msg_mock_000001`` (one counter for every kind)."""
        with self._cond:
            self._counter += 1
            return f"{prefix}_mock_{self._counter:06d}"

    # -- internals for the handler ----------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def wake_fd(self) -> socket.socket:
        """Readable once stop() was called; handlers select on it while sleeping."""
        return self._wake_r

    def wait_stopping(self, timeout: float) -> bool:
        """Sleep up to ``timeout``; True when the time passed without a stop."""
        return not self._stopping.wait(timeout)


def serve_main(server: MockServer[Any, Any]) -> int:
    """Serve until SIGINT/SIGTERM; the first stdout line is the base URL."""

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    server.start()
    try:
        print(server.base_url, flush=True)
        threading.Event().wait()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.stop()
    return 0


def server_arguments(argv: list[str] | None, description: str | None) -> argparse.Namespace:
    """``--host`` and ``--port`` of a mock's command line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    return parser.parse_args(argv)

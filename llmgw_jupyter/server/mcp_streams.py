"""What the endpoint adds to the SDK's handshake-era event streams, at the ASGI boundary.

Why here: mcp 2.3.0 sends a priming event only when an ``EventStore`` is configured (and never
on the GET stream), and Jupyter's Tornado writes the response headers with the first body bytes,
so a quiet stream (a ``codex_request`` waiting on its job) showed nothing to the client until the
first keep-alive ping, 15 s later. And on this era's wire the SDK answers a cancelled request with
``-32800`` (``mcp.server.streamable_http.REQUEST_CANCELLED``), where the spec says the receiver
SHOULD NOT answer it; the TypeScript SDK then reports a response for an unknown id.

``stream_send`` wraps the ASGI ``send`` of one SDK-served request:
- right after the headers of a ``text/event-stream`` response it sends a priming event, an event
  ID and empty data, so the headers go out at once. Clients of revisions before 2025-11-25 may
  not parse an empty-data event (the SDK gates its own priming on the same revision): they get
  an SSE comment instead, which every parser skips and which flushes the headers just as well;
- the ``-32800`` answer to the request the POST carried is dropped and the stream ends without
  it (nothing else is ever sent for a cancelled request).

There is no event history (no ``EventStore``): a ``GET`` with ``Last-Event-ID`` cannot be
resumed, and ``cannot_resume`` answers it with 405 and a JSON-RPC error. 405 is the status the
spec gives a GET the server answers with no stream, and the one clients treat as final (the
TypeScript SDK stops quietly; the Python SDK resolves the request it tried to resume).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import mcp_types as types
from mcp.server.streamable_http import REQUEST_CANCELLED
from mcp_types.version import is_version_at_least
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Send

PRIMING_SINCE = "2025-11-25"
_CANCEL_CODE = str(REQUEST_CANCELLED).encode()


def priming_event(version: str) -> bytes:
    """The first bytes of an event stream for a client of protocol ``version``."""
    if is_version_at_least(version, PRIMING_SINCE):  # False for unknown versions
        return b"id: %s\ndata: \n\n" % uuid.uuid4().hex.encode()
    return b": stream open\n\n"


def stream_send(send: Send, *, version: str, request_id: Any = None) -> Send:
    """``send`` for one SDK-served request: primed event streams, no answer to a cancelled
    ``request_id`` (the id of the JSON-RPC request the POST carried, if any)."""
    streaming = False
    ended = False

    async def wrapped(message: Message) -> None:
        nonlocal streaming, ended
        if ended:
            return
        kind = message["type"]
        if kind == "http.response.start":
            await send(message)
            if _is_event_stream(message):
                streaming = True
                prime = priming_event(version)
                await send({"type": "http.response.body", "body": prime, "more_body": True})
            return
        if (
            streaming
            and request_id is not None
            and kind == "http.response.body"
            and _answers_cancelled(bytes(message.get("body", b"")), request_id)
        ):
            ended = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await send(message)

    return wrapped


def cannot_resume() -> ASGIApp:
    """405 for a ``GET`` with ``Last-Event-ID``: no event history, nothing to resume."""
    message = (
        "Last-Event-ID: this server keeps no event history, so a stream cannot be resumed; "
        "send the request again (a GET without Last-Event-ID opens a new stream)"
    )
    return JSONResponse(
        {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": types.INVALID_REQUEST, "message": message},
        },
        status_code=405,
        headers={"Allow": "GET, POST, DELETE"},
    )


def _is_event_stream(start: Message) -> bool:
    for name, value in start.get("headers") or ():
        if bytes(name).lower() == b"content-type":
            return bytes(value).split(b";")[0].strip().lower() == b"text/event-stream"
    return False


def _answers_cancelled(chunk: bytes, request_id: Any) -> bool:
    """Whether ``chunk`` (SSE event lines) is the ``-32800`` answer to ``request_id``."""
    if _CANCEL_CODE not in chunk:
        return False
    for line in chunk.splitlines():
        if not line.startswith(b"data:"):
            continue
        try:
            data = json.loads(line[5:])
        except ValueError:
            continue
        error = data.get("error") if isinstance(data, dict) else None
        if (
            isinstance(error, dict)
            and error.get("code") == REQUEST_CANCELLED
            and data.get("id") == request_id
            and type(data.get("id")) is type(request_id)
        ):
            return True
    return False

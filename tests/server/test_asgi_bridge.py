"""The Tornado -> ASGI bridge over real HTTP: scope, streaming, body, disconnect, errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmgw_jupyter.server.asgi_bridge import ASGIHandler, Message, Receive, Scope, Send

ServeFn = Callable[[list[Any]], str]
WAIT = 5.0


class CallerHandler(ASGIHandler):
    """Authenticates in prepare() and hands the result to the app via the scope, as the MCP
    handler will."""

    def prepare(self) -> None:
        self.caller = self.request.headers.get("X-Who", "nobody")

    def asgi_scope_extras(self) -> dict[str, Any]:
        extras = super().asgi_scope_extras()
        extras["llmgw.caller"] = self.caller
        extras["state"] = {"caller": self.caller}
        return extras


async def scope_echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Raw ASGI app answering with the scope it saw (types checked here, values in the test)."""
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in scope["headers"])
    assert isinstance(scope["query_string"], bytes)
    message = await receive()
    assert message["type"] == "http.request"
    view = {
        key: scope[key]
        for key in ("type", "method", "scheme", "path", "root_path", "http_version", "state")
    }
    view["asgi"] = scope["asgi"]
    view["raw_path"] = scope["raw_path"].decode()
    view["query_string"] = scope["query_string"].decode()
    view["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
    view["client"] = list(scope["client"])
    view["server"] = list(scope["server"])
    view["caller"] = scope.get("llmgw.caller")
    body = json.dumps(view).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [
                (b"content-type", b"application/json"),
                (b"x-multi", b"one"),
                (b"x-multi", b"two"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def test_scope_and_plain_json(serve_tornado: ServeFn) -> None:
    base = serve_tornado(
        [(r"/base/app(/.*)?", CallerHandler, {"app": scope_echo, "root_path": "/base/app/"})]
    )
    async with httpx.AsyncClient(timeout=WAIT) as client:
        resp = await client.get(
            f"{base}/base/app/a%20b/c?x=1&y=%2F", headers={"X-Who": "grant:alice", "X-Custom": "v"}
        )
    assert resp.status_code == 201
    assert resp.headers.get_list("x-multi") == ["one", "two"]
    assert resp.headers["content-type"] == "application/json"
    # A one-chunk answer is sent with a Content-Length, not chunked.
    assert resp.headers["content-length"] == str(len(resp.content))
    seen = resp.json()
    assert seen["type"] == "http"
    assert seen["asgi"]["version"] == "3.0"
    assert seen["method"] == "GET"
    assert seen["scheme"] == "http"
    assert seen["http_version"] == "1.1"
    assert seen["path"] == "/base/app/a b/c"
    assert seen["raw_path"] == "/base/app/a%20b/c"
    assert seen["root_path"] == "/base/app"
    assert seen["query_string"] == "x=1&y=%2F"
    assert ["x-custom", "v"] in seen["headers"]
    assert ["x-who", "grant:alice"] in seen["headers"]
    assert seen["client"][0] == "127.0.0.1" and seen["client"][1] > 0
    assert seen["server"] == ["127.0.0.1", int(base.rsplit(":", 1)[1])]
    assert seen["caller"] == "grant:alice"
    assert seen["state"] == {"caller": "grant:alice"}


async def echo_body(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "sha256": hashlib.sha256(body).hexdigest(),
            "length": len(body),
            "query": dict(request.query_params),
            "route_path": request.url.path,
            "caller": request.scope.get("llmgw.caller"),
            "state_caller": request.state.caller,
        }
    )


async def test_request_body_round_trip_through_starlette(serve_tornado: ServeFn) -> None:
    app = Starlette(routes=[Route("/echo", echo_body, methods=["POST", "PUT"])])
    base = serve_tornado([(r"/mnt/.*", CallerHandler, {"app": app, "root_path": "/mnt"})])
    payload = os.urandom(300_000)
    async with httpx.AsyncClient(timeout=WAIT) as client:
        for method in ("POST", "PUT"):
            resp = await client.request(
                method, f"{base}/mnt/echo?k=v", content=payload, headers={"X-Who": "owner"}
            )
            assert resp.status_code == 200, resp.text
            seen = resp.json()
            assert seen["sha256"] == hashlib.sha256(payload).hexdigest()
            assert seen["length"] == len(payload)
            assert seen["query"] == {"k": "v"}
            assert seen["caller"] == "owner"
            assert seen["state_caller"] == "owner"


async def test_sse_chunks_arrive_before_the_app_finishes(serve_tornado: ServeFn) -> None:
    release = asyncio.Event()
    finished = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        yield b"data: one\n\n"
        await release.wait()  # only the client seeing chunk one can release this
        yield b"data: two\n\n"
        yield b"data: three\n\n"
        finished.set()

    async def sse(request: Request) -> Response:
        return StreamingResponse(events(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/sse", sse)])
    base = serve_tornado([(r"/sse", ASGIHandler, {"app": app})])
    async with (
        httpx.AsyncClient(timeout=WAIT) as client,
        client.stream("GET", f"{base}/sse") as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        chunks = resp.aiter_bytes()
        received = b""
        while b"data: one\n\n" not in received:
            received += await asyncio.wait_for(anext(chunks), WAIT)
        assert received == b"data: one\n\n"
        assert not finished.is_set()
        release.set()
        async for chunk in chunks:
            received += chunk
    assert received == b"data: one\n\ndata: two\n\ndata: three\n\n"
    assert finished.is_set()


async def test_empty_202_answer(serve_tornado: ServeFn) -> None:
    async def accepted(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    base = serve_tornado([(r"/n", ASGIHandler, {"app": accepted})])
    async with httpx.AsyncClient(timeout=WAIT) as client:
        resp = await client.post(f"{base}/n", content=b"{}")
    assert resp.status_code == 202
    assert resp.content == b""
    assert "text/html" not in resp.headers.get("content-type", "")


async def test_client_disconnect_reaches_the_app(serve_tornado: ServeFn) -> None:
    messages: list[Message] = []
    got_disconnect = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        messages.append(await receive())  # blocks until the client goes away
        got_disconnect.set()
        await send({"type": "http.response.body", "body": b"ignored", "more_body": True})

    base = serve_tornado([(r"/d", ASGIHandler, {"app": app})])
    async with httpx.AsyncClient(timeout=WAIT) as client:
        async with client.stream("GET", f"{base}/d") as resp:
            first = await asyncio.wait_for(anext(resp.aiter_raw()), WAIT)
            assert first == b"first"
            assert not got_disconnect.is_set()
        # Leaving the block with the body unread closes the connection.
        await asyncio.wait_for(got_disconnect.wait(), WAIT)
        assert [m["type"] for m in messages] == ["http.request", "http.disconnect"]


async def test_app_ignoring_disconnect_is_cancelled(serve_tornado: ServeFn) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def stubborn(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        started.set()
        try:
            await asyncio.Event().wait()  # never reads receive(), never ends on its own
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def ok(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    base = serve_tornado(
        [
            (r"/stubborn", ASGIHandler, {"app": stubborn, "disconnect_grace": 0.05}),
            (r"/ok", ASGIHandler, {"app": ok}),
        ]
    )
    async with httpx.AsyncClient(timeout=WAIT) as client:
        async with client.stream("GET", f"{base}/stubborn") as resp:
            await asyncio.wait_for(anext(resp.aiter_raw()), WAIT)
            await asyncio.wait_for(started.wait(), WAIT)
        await asyncio.wait_for(cancelled.wait(), WAIT)
        assert (await client.get(f"{base}/ok")).text == "ok"


async def test_app_exception_before_start_is_500(serve_tornado: ServeFn) -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("boom")

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    base = serve_tornado(
        [(r"/broken", ASGIHandler, {"app": broken}), (r"/silent", ASGIHandler, {"app": silent})]
    )
    async with httpx.AsyncClient(timeout=WAIT) as client:
        resp = await client.get(f"{base}/broken")
        assert resp.status_code == 500
        assert "boom" not in resp.text  # no internals leak to the client
        assert (await client.post(f"{base}/silent")).status_code == 500


async def test_app_exception_mid_stream_truncates(serve_tornado: ServeFn) -> None:
    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("mid-stream failure")

    base = serve_tornado([(r"/half", ASGIHandler, {"app": half})])
    async with httpx.AsyncClient(timeout=WAIT) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"{base}/half")

"""A do-nothing MCP server: replays recorded answers, so a client's own cost can be measured.

Why: "within 2 ms of the client's own cost" needs the client's cost with a server that costs
nothing. This one answers every request from a table recorded from the real gateway in the same
run (same bytes, same schemas), over plain asyncio streams on loopback, in its own process so it
does not share the client's interpreter. Streamable HTTP as the official client uses it:
``POST`` answered with ``application/json`` (notifications with 202), ``GET`` (the optional
standalone stream) with 405, ``DELETE`` with 200.

Run: ``python benchmarks/mcp_stub.py answers.json``; it prints its port on the first line.
``answers.json``: ``{"initialize": result, "tools/list": result, "tools/call": {tool: result}}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

SESSION = b"stub-session"


def _response(status: bytes, body: bytes = b"", content_type: bytes = b"") -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n" % len(body)
    if content_type:
        head += b"Content-Type: " + content_type + b"\r\n"
    return head + b"Mcp-Session-Id: " + SESSION + b"\r\n\r\n" + body


def _answer(answers: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    method = message.get("method")
    if method == "tools/call":
        result = answers["tools/call"][message["params"]["name"]]
    else:
        result = answers.get(str(method), {})
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


async def _serve(
    answers: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0]
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if method == "POST":
                message = json.loads(body)
                if "id" not in message:
                    writer.write(_response(b"202 Accepted"))
                else:
                    data = json.dumps(_answer(answers, message)).encode()
                    writer.write(_response(b"200 OK", data, b"application/json"))
            elif method == "GET":
                writer.write(_response(b"405 Method Not Allowed"))
            else:
                writer.write(_response(b"200 OK"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(path: str) -> None:
    with open(path, encoding="utf-8") as file:
        answers = json.load(file)
    server = await asyncio.start_server(
        lambda r, w: _serve(answers, r, w), "127.0.0.1", 0, limit=2**20
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

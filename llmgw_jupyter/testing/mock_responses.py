"""A deterministic mock of the OpenAI Responses API, so Codex can run offline in tests and demos.

The answer to every ``POST /v1/responses`` is derived from the last user message
(``"echo: <text>"``), so a test can tell which prompt the model saw. Behaviour knobs (delay,
HTTP failures, dropped streams, several spaced output items) can be set from Python or from the
prompt itself with directives such as ``[mock:delay=5]``, because tests that drive Codex through a
notebook or a browser cannot reach the server object.

A prompt holding ``[mock-shell]<command>[/mock-shell]`` makes the model call Codex's shell tool
(``exec_command``) with that command, as a model that obeys the prompt would; once Codex sends the
command's output back, the answer is ``shell output: <output>``. Security tests use this to see
exactly what a job's commands can reach.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import socket
import sys
import time
from typing import Any

from llmgw_jupyter.testing.mock_server import (
    DirectiveError,
    MockHandler,
    MockHTTPServer,
    MockServer,
    parse_directive_fields,
    serve_main,
    server_arguments,
    sse,
)

__all__ = [
    "DirectiveError",
    "MockBehaviour",
    "MockResponsesServer",
    "RecordedRequest",
    "parse_directives",
]

log = logging.getLogger(__name__)

SHELL_TOOL = "exec_command"  # Codex 0.169.0's shell tool for ``codex exec``


@dataclasses.dataclass(frozen=True)
class MockBehaviour:
    """How the mock answers a request; prompt directives override these fields per request."""

    delay: float = 0.0
    """Seconds to wait before answering (interrupted by ``stop()`` or a client hang-up)."""
    fail: int | None = None
    """Answer with this HTTP status and an OpenAI-style JSON error body instead of a stream."""
    drop: bool = False
    """Close the connection mid-stream, before ``response.completed``."""
    steps: int = 1
    """Number of assistant message items; all but the last say ``step k/N``."""
    step_delay: float = 0.0
    """Seconds between two output items, so live progress can be observed."""
    reply: str | None = None
    """Fixed answer text instead of ``echo: <last user message>``."""
    shell: str | None = None
    """A command the model asks Codex to run (``exec_command``) before it answers."""


_DIRECTIVE_FIELDS: dict[str, type] = {
    "delay": float,
    "fail": int,
    "drop": bool,
    "steps": int,
    "step_delay": float,
}


def parse_directives(text: str) -> dict[str, Any]:
    """Parse every ``[mock:key=value,...]`` directive in ``text`` into MockBehaviour fields.

    A bare key (``[mock:drop]``) means true. Unknown keys or bad values raise DirectiveError so
    a typo fails loudly instead of being ignored.
    """
    return parse_directive_fields(text, _DIRECTIVE_FIELDS)


def _message_text(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request the mock received, as the tests need to inspect it."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: Any
    """Parsed JSON body, or None when absent or not JSON."""
    turn_metadata: dict[str, Any] | None
    """The parsed ``x-codex-turn-metadata`` header (thread_id, history_initialization, ...)."""
    last_user_text: str | None
    received_at: float

    @property
    def tool_outputs(self) -> list[str]:
        """What the commands run in this turn printed, as Codex reported it back to the model."""
        return _tool_outputs_after_last_user(self.body)

    @property
    def messages(self) -> list[tuple[str, str]]:
        """``(role, text)`` of every message item in the request input, in order."""
        items = self.body.get("input") if isinstance(self.body, dict) else None
        if not isinstance(items, list):
            return []
        return [
            (str(item.get("role", "")), _message_text(item))
            for item in items
            if isinstance(item, dict) and item.get("type", "message") == "message"
        ]


def _tool_outputs_after_last_user(body: Any) -> list[str]:
    """Outputs of tool calls that follow the last user message (this turn's results)."""
    items = body.get("input") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return []
    outputs: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("role") == "user":
            outputs = []
        elif item.get("type") == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = "".join(str(p.get("text", "")) for p in output if isinstance(p, dict))
            outputs.append(str(output))
    return outputs


def _last_user_text(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    items = body.get("input")
    if isinstance(items, str):
        return items
    if not isinstance(items, list):
        return None
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            return _message_text(item)
    return None


def _usage(body_size: int, answer: str) -> dict[str, Any]:
    input_tokens = max(1, body_size // 4)
    cached = input_tokens // 2
    output_tokens = max(1, len(answer.encode()) // 4)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


_ERROR_KINDS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def _error_body(status: int, message: str) -> bytes:
    kind, code = _ERROR_KINDS.get(status, ("server_error", "server_error"))
    error = {"message": message, "type": kind, "param": None, "code": code}
    return json.dumps({"error": error}).encode()


class _Handler(MockHandler):
    server: MockHTTPServer[MockResponsesServer]

    # -- plumbing ---------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    # -- routes -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._record(b"")
        self._send_json(404, _error_body(404, f"mock: no route for GET {self.path}"))

    def do_POST(self) -> None:
        raw = self._read_body()
        record = self._record(raw)
        if self.path.split("?", 1)[0].rstrip("/") != "/v1/responses":
            self._send_json(404, _error_body(404, f"mock: no route for POST {self.path}"))
            return
        owner = self.server.owner
        try:
            behaviour = owner.behaviour_for(record.last_user_text or "")
        except DirectiveError as exc:
            self._send_json(400, _error_body(400, str(exc)))
            return
        if behaviour.delay > 0 and not self._pause(behaviour.delay):
            self.close_connection = True
            return
        if behaviour.fail is not None:
            message = f"mock failure {behaviour.fail} (requested)"
            self._send_json(behaviour.fail, _error_body(behaviour.fail, message))
            return
        try:
            self._stream(record, behaviour, len(raw))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _record(self, raw: bytes) -> RecordedRequest:
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        metadata: dict[str, Any] | None = None
        if "x-codex-turn-metadata" in headers:
            try:
                parsed = json.loads(headers["x-codex-turn-metadata"])
                metadata = parsed if isinstance(parsed, dict) else None
            except ValueError:
                metadata = None
        record = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=headers,
            body=body,
            turn_metadata=metadata,
            last_user_text=_last_user_text(body),
            received_at=time.time(),
        )
        self.server.owner.record(record)
        return record

    def _stream(self, record: RecordedRequest, behaviour: MockBehaviour, size: int) -> None:
        owner = self.server.owner
        response_id = owner.next_response_id()
        answer = (
            behaviour.reply
            if behaviour.reply is not None
            else f"echo: {record.last_user_text or ''}"
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        created = {"id": response_id, "object": "response", "status": "in_progress"}
        self._chunk(sse({"type": "response.created", "response": created}))
        if behaviour.drop:
            # Half an event, then a hard close: the client sees a broken chunked stream.
            self._chunk(b'event: response.output_item.done\ndata: {"type":')
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if behaviour.shell is not None:
            results = record.tool_outputs
            if not results:
                self._call_shell(response_id, behaviour.shell, size)
                return
            answer = "shell output: " + "\n".join(results)
        texts = [f"step {k}/{behaviour.steps}" for k in range(1, behaviour.steps)] + [answer]
        output: list[dict[str, Any]] = []
        for index, text in enumerate(texts):
            if index and behaviour.step_delay > 0 and not self._pause(behaviour.step_delay):
                self.close_connection = True
                return
            item = {
                "type": "message",
                "id": f"msg_{response_id}_{index}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
            output.append(item)
            event = {"type": "response.output_item.done", "output_index": index, "item": item}
            self._chunk(sse(event))
        completed = {
            "id": response_id,
            "object": "response",
            "status": "completed",
            "output": output,
            "usage": _usage(size, "".join(texts)),
        }
        self._chunk(sse({"type": "response.completed", "response": completed}))
        self.wfile.write(b"0\r\n\r\n")

    def _call_shell(self, response_id: str, command: str, size: int) -> None:
        """Answer with one ``exec_command`` function call; Codex runs it and asks again."""
        item = {
            "type": "function_call",
            "id": f"fc_{response_id}",
            "call_id": f"call_{response_id}",
            "name": SHELL_TOOL,
            "arguments": json.dumps({"cmd": command}),
            "status": "completed",
        }
        self._chunk(sse({"type": "response.output_item.done", "output_index": 0, "item": item}))
        completed = {
            "id": response_id,
            "object": "response",
            "status": "completed",
            "output": [item],
            "usage": _usage(size, command),
        }
        self._chunk(sse({"type": "response.completed", "response": completed}))
        self.wfile.write(b"0\r\n\r\n")


class MockResponsesServer(MockServer[MockBehaviour, RecordedRequest]):
    """The mock server: ``start()``/``stop()`` or ``with``; ``base_url`` ends in ``/v1``."""

    handler_class = _Handler
    thread_name = "mock-responses"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the provider base_url for Codex."""
        return f"http://{self._host}:{self.port}/v1"

    def new_behaviour(self, **fields: Any) -> MockBehaviour:
        return MockBehaviour(**fields)

    def parse_directives(self, prompt: str) -> dict[str, Any]:
        return parse_directives(prompt)

    def next_response_id(self) -> str:
        return self.next_id("resp")


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; the first stdout line is the base URL."""
    args = server_arguments(argv, __doc__.splitlines()[0] if __doc__ else None)
    return serve_main(MockResponsesServer(host=args.host, port=args.port))


if __name__ == "__main__":
    sys.exit(main())

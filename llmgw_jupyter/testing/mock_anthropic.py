"""A deterministic mock of the Anthropic Messages API, so Claude Code can run offline in tests.

The answer to every ``POST /v1/messages`` is derived from the last user message's text, with any
``<system-reminder>`` blocks removed (``"echo: <text>"``), so a test can tell which prompt the
model saw. Behaviour knobs (delay, HTTP failures, dropped streams, several spaced text blocks,
usage figures, an answer that reports the conversation's user turns) can be set from Python or
from the prompt itself with directives such as ``[mock:delay=5]``, because tests that drive Claude
through a notebook or a browser cannot reach the server object.

A prompt holding ``[mock-shell]<command>[/mock-shell]`` makes the model call Claude Code's shell
tool (``Bash``) with that command, as a model that obeys the prompt would; once Claude sends the
``tool_result`` back, the answer is ``shell output: <output>``. Security tests use this to see
exactly what a job's commands can reach.

Failures carry ``x-should-retry: false`` so the CLI gives up at once instead of retrying.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmgw_jupyter.testing.mock_server import (
    DirectiveError,
    MockHandler,
    MockHTTPServer,
    MockServer,
    parse_directive_fields,
    serve_main,
    server_arguments,
    shell_command,
    sse,
)

__all__ = [
    "SHELL_TOOL",
    "STRUCTURED_TOOL",
    "AnthropicBehaviour",
    "AnthropicRequest",
    "DirectiveError",
    "MockAnthropicServer",
    "claude_cli_env",
    "parse_directives",
    "shell_command",
    "strip_system_reminders",
    "structured_json",
]

log = logging.getLogger(__name__)

_JSON_RE = re.compile(r"\[mock-json\](.*?)\[/mock-json\]", re.DOTALL)
_REMINDER_RE = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)
SHELL_TOOL = "Bash"  # Claude Code 2.1.328's shell tool
STRUCTURED_TOOL = "StructuredOutput"  # the tool ``--json-schema`` adds; its input is the answer
MAX_BODY_BYTES = 64 * 1024 * 1024
"""Larger request bodies are refused with 413 (the real API's limit is lower still)."""
_DELTA_CHARS = 24
"""Text is streamed in ``text_delta`` pieces of at most this many characters."""


@dataclasses.dataclass(frozen=True)
class AnthropicBehaviour:
    """How the mock answers a request; prompt directives override these fields per request."""

    delay: float = 0.0
    """Seconds to wait before answering (interrupted by ``stop()`` or a client hang-up)."""
    fail: int | None = None
    """Answer with this HTTP status and an Anthropic-style JSON error body instead of a message."""
    drop: bool = False
    """Close a streaming answer mid-stream, after ``message_start`` (non-streaming ones answer)."""
    steps: int = 1
    """Number of text content blocks; all but the last say ``step k/N``."""
    step_delay: float = 0.0
    """Seconds between two text blocks, so live progress can be observed."""
    history: bool = False
    """Answer ``user turns: N: <t1> | <t2> ...`` (every user text turn the request carried)."""
    input_tokens: int | None = None
    """Reported ``input_tokens``; by default derived from the request body's size."""
    output_tokens: int | None = None
    """Reported ``output_tokens``; by default derived from the answer's length."""
    cache_read: int | None = None
    """Reported ``cache_read_input_tokens``; by default the same as ``input_tokens``."""
    cache_creation: int | None = None
    """Reported ``cache_creation_input_tokens``; by default 0."""
    reply: str | None = None
    """Fixed answer text instead of ``echo: <last user message>``."""
    shell: str | None = None
    """A command the model asks Claude to run (``Bash``) before it answers."""
    structured: str | None = None
    """JSON the model passes to ``StructuredOutput`` (``--json-schema`` runs) before it answers."""


_DIRECTIVE_FIELDS: dict[str, type] = {
    "delay": float,
    "fail": int,
    "drop": bool,
    "steps": int,
    "step_delay": float,
    "history": bool,
    "input_tokens": int,
    "output_tokens": int,
    "cache_read": int,
    "cache_creation": int,
}
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read", "cache_creation")


def parse_directives(text: str) -> dict[str, Any]:
    """Parse every ``[mock:key=value,...]`` directive in ``text`` into AnthropicBehaviour fields.

    A bare key (``[mock:drop]``) means true. Unknown keys or bad values raise DirectiveError so
    a typo fails loudly instead of being ignored.
    """
    fields = parse_directive_fields(text, _DIRECTIVE_FIELDS)
    for name in _TOKEN_FIELDS:
        if fields.get(name, 0) < 0:
            raise DirectiveError(f"mock directive {name!r} must be >= 0")
    for name in ("delay", "step_delay"):
        if fields.get(name, 0.0) < 0:
            raise DirectiveError(f"mock directive {name!r} must be >= 0")
    return fields


def structured_json(prompt: str) -> str | None:
    """The JSON of a ``[mock-json]...[/mock-json]`` block in a prompt (validated), if any."""
    match = _JSON_RE.search(prompt)
    if match is None:
        return None
    try:
        json.loads(match.group(1))
    except ValueError as exc:
        raise DirectiveError(f"[mock-json] block is not valid JSON: {exc}") from exc
    return match.group(1)


def strip_system_reminders(text: str) -> str:
    """``text`` without Claude Code's ``<system-reminder>`` blocks, stripped of outer spaces."""
    return _REMINDER_RE.sub("", text).strip()


# -- reading a Messages API request ----------------------------------------------------------


def _user_text(message: Any) -> str:
    """The text a user message carries (system reminders removed); "" for tool results only."""
    if not isinstance(message, dict) or message.get("role") != "user":
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return strip_system_reminders(content)
    if not isinstance(content, list):
        return ""
    parts = [
        strip_system_reminders(str(block.get("text", "")))
        for block in content
        if isinstance(block, dict) and block.get("type") == "text"
    ]
    return "\n".join(part for part in parts if part)


def _tool_result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _messages(body: Any) -> list[Any]:
    messages = body.get("messages") if isinstance(body, dict) else None
    return messages if isinstance(messages, list) else []


@dataclasses.dataclass(frozen=True)
class AnthropicRequest:
    """One request the mock received, as the tests need to inspect it."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: Any
    """Parsed JSON body, or None when absent or not JSON."""
    received_at: float

    @property
    def route(self) -> str:
        """The path without its query string (``/v1/messages`` for ``/v1/messages?beta=true``)."""
        return self.path.split("?", 1)[0]

    @property
    def streaming(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True

    @property
    def model(self) -> str | None:
        model = self.body.get("model") if isinstance(self.body, dict) else None
        return model if isinstance(model, str) else None

    @property
    def user_texts(self) -> list[str]:
        """The text of every user turn in order (tool-result-only messages left out)."""
        return [text for text in map(_user_text, _messages(self.body)) if text]

    @property
    def last_user_text(self) -> str | None:
        texts = self.user_texts
        return texts[-1] if texts else None

    @property
    def messages(self) -> list[tuple[str, str]]:
        """``(role, text)`` of every message, text blocks only, system reminders removed."""
        out: list[tuple[str, str]] = []
        for message in _messages(self.body):
            if not isinstance(message, dict):
                continue
            role = str(message.get("role", ""))
            if role == "user":
                out.append((role, _user_text(message)))
                continue
            content = message.get("content")
            if isinstance(content, str):
                out.append((role, content))
            elif isinstance(content, list):
                texts = [
                    str(b.get("text", ""))
                    for b in content
                    if isinstance(b, dict) and b.get("type") == "text"
                ]
                out.append((role, "".join(texts)))
        return out

    @property
    def tool_outputs(self) -> list[str]:
        """What the tools run since the last user text printed, as Claude reported it back."""
        outputs: list[str] = []
        for message in _messages(self.body):
            if _user_text(message):
                outputs = []
            if not isinstance(message, dict) or message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, list):
                outputs.extend(
                    _tool_result_text(block)
                    for block in content
                    if isinstance(block, dict) and block.get("type") == "tool_result"
                )
        return outputs


# -- building answers --------------------------------------------------------------------------


def _usage(behaviour: AnthropicBehaviour, body_size: int, answer: str) -> dict[str, int]:
    """Deterministic usage: the same request and answer always report the same figures."""
    prompt_tokens = max(2, body_size // 4)
    cache_read = behaviour.cache_read if behaviour.cache_read is not None else prompt_tokens // 2
    return {
        "input_tokens": (
            behaviour.input_tokens
            if behaviour.input_tokens is not None
            else prompt_tokens - prompt_tokens // 2
        ),
        "cache_creation_input_tokens": behaviour.cache_creation or 0,
        "cache_read_input_tokens": cache_read,
        "output_tokens": (
            behaviour.output_tokens
            if behaviour.output_tokens is not None
            else max(1, len(answer.encode()) // 4)
        ),
    }


_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> bytes:
    """An Anthropic API error body: ``{"type": "error", "error": {"type", "message"}}``."""
    kind = _ERROR_TYPES.get(status, "api_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


def _answer_text(record: AnthropicRequest, behaviour: AnthropicBehaviour) -> str:
    if behaviour.reply is not None:
        return behaviour.reply
    if behaviour.history:
        turns = record.user_texts
        return f"user turns: {len(turns)}: " + " | ".join(turns)
    return f"echo: {record.last_user_text or ''}"


def _content_blocks(
    record: AnthropicRequest, behaviour: AnthropicBehaviour, message_id: str
) -> list[dict[str, Any]]:
    """The assistant's content: one tool use (``Bash``, ``StructuredOutput``), or text blocks."""
    outputs = record.tool_outputs
    tool: tuple[str, dict[str, Any]] | None = None
    if behaviour.shell is not None and not outputs:
        tool = SHELL_TOOL, {"command": behaviour.shell, "description": "Run the requested command"}
    elif behaviour.structured is not None and not outputs:
        tool = STRUCTURED_TOOL, json.loads(behaviour.structured)
    if tool is not None:
        tool_id = f"toolu_{message_id.removeprefix('msg_')}"
        return [{"type": "tool_use", "id": tool_id, "name": tool[0], "input": tool[1]}]
    if behaviour.shell is not None:
        answer = "shell output: " + "\n".join(outputs)
    elif behaviour.structured is not None:
        answer = "structured output sent"
    else:
        answer = _answer_text(record, behaviour)
    texts = [f"step {k}/{behaviour.steps}" for k in range(1, behaviour.steps)] + [answer]
    return [{"type": "text", "text": text} for text in texts]


def _stop_reason(blocks: list[dict[str, Any]]) -> str:
    return "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"


def _blocks_text(blocks: list[dict[str, Any]]) -> str:
    return "".join(b["text"] if "text" in b else json.dumps(b.get("input")) for b in blocks)


# -- the HTTP server ---------------------------------------------------------------------------


class _Handler(MockHandler):
    server: MockHTTPServer[MockAnthropicServer]

    # -- plumbing ---------------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        """The request body; None (after answering 413) when it is too large."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(413, error_body(413, f"request body over {MAX_BODY_BYTES} bytes"))
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(self, status: int, payload: bytes, *, failure: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("request-id", self.server.owner.next_id("req"))
        if failure or status >= 400:
            self.send_header("x-should-retry", "false")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    # -- routes -----------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        """``HEAD /api/hello`` is Claude Code's connectivity probe: 200 without a body."""
        self._record(b"")
        if self.path.split("?", 1)[0] == "/api/hello":
            self._send_json(200, b"")
        else:
            self._send_json(404, b"")

    def do_GET(self) -> None:
        self._record(b"")
        self._send_json(404, error_body(404, f"mock: no route for GET {self.path}"))

    def do_POST(self) -> None:
        raw = self._read_body()
        if raw is None:
            return
        record = self._record(raw)
        if record.route == "/v1/messages/count_tokens":
            tokens = max(1, len(raw) // 4)
            self._send_json(200, json.dumps({"input_tokens": tokens}).encode())
            return
        if record.route.rstrip("/") != "/v1/messages":
            self._send_json(404, error_body(404, f"mock: no route for POST {self.path}"))
            return
        if not isinstance(record.body, dict) or not isinstance(record.body.get("messages"), list):
            self._send_json(400, error_body(400, "messages: required, a JSON array"))
            return
        owner = self.server.owner
        try:
            behaviour = owner.behaviour_for(record.last_user_text or "")
        except DirectiveError as exc:
            self._send_json(400, error_body(400, str(exc)))
            return
        if behaviour.delay > 0 and not self._pause(behaviour.delay):
            self.close_connection = True
            return
        if behaviour.fail is not None:
            message = f"mock failure {behaviour.fail} (requested)"
            self._send_json(behaviour.fail, error_body(behaviour.fail, message), failure=True)
            return
        message_id = owner.next_id("msg")
        blocks = _content_blocks(record, behaviour, message_id)
        usage = _usage(behaviour, len(raw), _blocks_text(blocks))
        try:
            if record.streaming:
                self._stream(record, behaviour, message_id, blocks, usage)
            else:
                whole = self._message(record, message_id, blocks, _stop_reason(blocks), usage)
                self._send_json(200, json.dumps(whole).encode())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _record(self, raw: bytes) -> AnthropicRequest:
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        record = AnthropicRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            received_at=time.time(),
        )
        self.server.owner.record(record)
        return record

    @staticmethod
    def _message(
        record: AnthropicRequest,
        message_id: str,
        content: list[dict[str, Any]],
        stop_reason: str | None,
        usage: dict[str, int],
    ) -> dict[str, Any]:
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": record.model or "claude-mock",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }

    def _stream(
        self,
        record: AnthropicRequest,
        behaviour: AnthropicBehaviour,
        message_id: str,
        blocks: list[dict[str, Any]],
        usage: dict[str, int],
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", self.server.owner.next_id("req"))
        self.end_headers()
        start_usage = dict(usage, output_tokens=1)
        start = self._message(record, message_id, [], None, start_usage)
        self._chunk(sse({"type": "message_start", "message": start}))
        if behaviour.drop:
            # Half an event, then a hard close: the client sees a broken chunked stream.
            self._chunk(b'event: content_block_start\ndata: {"type":')
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._chunk(sse({"type": "ping"}))
        for index, block in enumerate(blocks):
            if index and behaviour.step_delay > 0 and not self._pause(behaviour.step_delay):
                self.close_connection = True
                return
            self._stream_block(index, block)
        delta = {"stop_reason": _stop_reason(blocks), "stop_sequence": None}
        self._chunk(sse({"type": "message_delta", "delta": delta, "usage": {**usage}}))
        self._chunk(sse({"type": "message_stop"}))
        self.wfile.write(b"0\r\n\r\n")

    def _stream_block(self, index: int, block: dict[str, Any]) -> None:
        if block["type"] == "tool_use":
            start_block = dict(block, input={})
            whole = json.dumps(block["input"])
            pieces = [whole[i : i + _DELTA_CHARS] for i in range(0, len(whole), _DELTA_CHARS)]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        else:
            start_block = {"type": "text", "text": ""}
            text = block["text"]
            pieces = [text[i : i + _DELTA_CHARS] for i in range(0, len(text), _DELTA_CHARS)]
            deltas = [{"type": "text_delta", "text": p} for p in pieces or [""]]
        self._chunk(
            sse({"type": "content_block_start", "index": index, "content_block": start_block})
        )
        for delta in deltas:
            self._chunk(sse({"type": "content_block_delta", "index": index, "delta": delta}))
        self._chunk(sse({"type": "content_block_stop", "index": index}))


class MockAnthropicServer(MockServer[AnthropicBehaviour, AnthropicRequest]):
    """The mock server: ``start()``/``stop()`` or ``with``; ``base_url`` is ANTHROPIC_BASE_URL."""

    handler_class = _Handler
    thread_name = "mock-anthropic"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: the ``ANTHROPIC_BASE_URL`` for Claude Code (no ``/v1``)."""
        return f"http://{self._host}:{self.port}"

    def new_behaviour(self, **fields: Any) -> AnthropicBehaviour:
        return AnthropicBehaviour(**fields)

    def parse_directives(self, prompt: str) -> dict[str, Any]:
        return parse_directives(prompt)

    def prompt_overrides(self, prompt: str) -> dict[str, Any]:
        overrides = super().prompt_overrides(prompt)
        structured = structured_json(prompt)
        if structured is not None:
            overrides["structured"] = structured
        return overrides

    @property
    def message_requests(self) -> list[AnthropicRequest]:
        """Only the ``POST /v1/messages`` requests (one per model turn)."""
        return [r for r in self.requests if r.method == "POST" and r.route == "/v1/messages"]


def claude_cli_env(
    base_url: str, state_dir: Path, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """An environment that runs the real Claude Code CLI offline against ``base_url``.

    Config and temporary files go to private directories under ``state_dir`` (created), the key
    is a dummy, update checks, telemetry and other non-essential traffic are off, and API errors
    are not retried. Loopback is added to NO_PROXY so a proxy cannot swallow the requests.
    """
    env = dict(os.environ if base is None else base)
    for name in list(env):
        if name.startswith(("ANTHROPIC_", "CLAUDE_")):
            del env[name]  # an outer Claude session's settings must not leak into the test
    config_dir = Path(state_dir) / "config"
    tmp_dir = Path(state_dir) / "tmp"
    config_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    env.update(
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY="sk-ant-mock-dummy",
        CLAUDE_CONFIG_DIR=str(config_dir),
        CLAUDE_CODE_TMPDIR=str(tmp_dir),
        DISABLE_AUTOUPDATER="1",
        DISABLE_TELEMETRY="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        CLAUDE_CODE_MAX_RETRIES="0",
    )
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [h for h in env.get(name, "").split(",") if h.strip()]
        hosts += [h for h in ("127.0.0.1", "localhost") if h not in hosts]
        env[name] = ",".join(hosts)
    return env


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; the first stdout line is the base URL."""
    args = server_arguments(argv, __doc__.splitlines()[0] if __doc__ else None)
    return serve_main(MockAnthropicServer(host=args.host, port=args.port))


if __name__ == "__main__":
    sys.exit(main())

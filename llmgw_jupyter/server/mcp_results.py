"""Gateway results as MCP ``tools/call`` results, built once as their wire form (plain dicts).

Why plain dicts: the quick path (``mcp_quick``) writes the JSON-RPC answer itself, and building
the SDK's pydantic ``CallToolResult`` only to dump it again cost more than the tool call's own
JSON. The SDK path validates the same dict into its model (``call_result``), so both paths send
one shape. ``tests/server/test_mcp_results.py`` pins that shape against the SDK's own per-revision
wire surface (``mcp_types.methods.serialize_server_result``) for every handshake revision: a new
SDK that changes the surface fails that test instead of changing the wire silently.

What every client can read (issue 10): tool errors are ``isError`` results with text only, no
``structuredContent`` (the spec requires structured content to match the tool's
``outputSchema``, and the schemas describe success; the TypeScript SDK rejects a mismatch with
``-32602`` and the agent sees nothing). The text carries the category, message, field, rule and
``retry_after_seconds`` (``[POLICY DENIED] ...`` for refusals); the same facts, as an object, are
in the result's ``_meta["llmgw/error"]``.

One encoding per success on the quick path: the gateway's success carries its structured answer
as JSON already (``structured_json``, made once by pydantic-core, and it is also the text);
``answer_bytes`` splices that string into the JSON-RPC envelope as ``structuredContent`` and,
JSON-escaped once, as the text, without building the wire dict or encoding it again.
``tests/server/test_mcp_wire_splice.py`` pins that the bytes parse to exactly ``result_wire``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import mcp_types as types

ERROR_META_KEY = "llmgw/error"
"""``_meta`` key of an ``isError`` result: the error as an object (category, message, field,
rule, retry_after_seconds, ...)."""

_SHOWN_FACTS = ("category", "field", "rule", "retry_after_seconds")
# Compact, as the gateway's own result JSON (``ToolResult.structured_json``), and ASCII: lone
# surrogates (undecodable bytes in a text) stay escaped, so every answer encodes as UTF-8.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class ToolResult(Protocol):
    """The outcome of one call; denials and tool failures are results with ``is_error``.

    An error's ``structured`` is ``{"error": {"category", "message", "field"}, ...}`` (denials
    add ``decision``, ``reason``, ``rule``, ``retry_after_seconds``); the real result also has
    ``error`` (the category), read with ``getattr`` so simpler results fit too.
    """

    @property
    def is_error(self) -> bool: ...
    @property
    def text(self) -> str: ...
    @property
    def structured(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class ErrorResult:
    """An error result made outside the gateway's ``ToolResult`` (a ``GatewayError`` raised)."""

    text: str
    structured: dict[str, Any] = field(default_factory=dict)
    is_error: bool = True


def _success_json(result: ToolResult) -> tuple[str, str | None]:
    """A success's text and its structured content as JSON (None when it has none).

    The gateway's result gives its JSON (``structured_json``), which is also its text; other
    results have it encoded here, once.
    """
    structured_json: str | None = getattr(result, "structured_json", None)
    if structured_json is None:
        structured = result.structured
        if structured is not None:
            structured_json = _ENCODER.encode(structured)
    text = result.text or structured_json or ""
    return text, structured_json


def result_wire(result: ToolResult) -> dict[str, Any]:
    """A gateway result as the wire form of ``CallToolResult``: success with its structured
    content (also as text, as the spec asks), errors as text + ``_meta``."""
    if result.is_error:
        return error_wire(result.text, result.structured or {})
    text, structured_json = _success_json(result)
    wire: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if structured_json is not None:
        wire["structuredContent"] = result.structured
    wire["isError"] = False
    return wire


def answer_bytes(request_id: str | int, result: ToolResult) -> bytes:
    """The JSON-RPC response carrying ``result_wire(result)``, encoded, for the quick path.

    A success is spliced: its one JSON string goes in as ``structuredContent`` and, escaped
    once, as the text (the same keys in the same order as ``result_wire``; no dict is built and
    nothing is encoded twice). Errors, rare and small, are encoded from their wire form. UTF-8
    JSON: the structured content keeps non-ASCII characters as pydantic-core wrote them.
    """
    if result.is_error:
        return response_bytes(request_id, result_wire(result))
    text, structured_json = _success_json(result)
    encode = _ENCODER.encode
    head = f'{{"jsonrpc":"2.0","id":{encode(request_id)},"result":{{"content":'
    content = f'[{{"type":"text","text":{encode(text)}}}]'
    if structured_json is None:
        return f'{head}{content},"isError":false}}}}'.encode()
    return f'{head}{content},"structuredContent":{structured_json},"isError":false}}}}'.encode()


def response_bytes(request_id: str | int, result: Mapping[str, Any]) -> bytes:
    """A JSON-RPC response with ``result`` (a wire-form dict), encoded (ASCII JSON)."""
    return _ENCODER.encode({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()


def error_wire(text: str, structured: Mapping[str, Any]) -> dict[str, Any]:
    """An ``isError`` result every client can read (see the module docstring).

    ``structured`` is ``{"error": {...}, ...}`` as the gateway gives it, or a bare error object.
    """
    details = error_details(structured)
    category = details.get("category")
    first = text or f"{category or 'error'}: {details.get('message', '')}"
    parts = [first]
    for name in _SHOWN_FACTS:
        value = details.get(name)
        said = f"{name}: {value}" in first or (name == "category" and first.startswith(f"{value}:"))
        if value is not None and not said:
            parts.append(f"{name}: {value}")
    return {
        "content": [{"type": "text", "text": "; ".join(parts)}],
        "isError": True,
        "_meta": {ERROR_META_KEY: details},
    }


def call_result(result: ToolResult) -> types.CallToolResult:
    """``result_wire`` as the SDK's model (the SDK-served path returns models)."""
    return types.CallToolResult.model_validate(result_wire(result))


def error_result(text: str, structured: Mapping[str, Any]) -> types.CallToolResult:
    """``error_wire`` as the SDK's model."""
    return types.CallToolResult.model_validate(error_wire(text, structured))


def error_details(structured: Mapping[str, Any]) -> dict[str, Any]:
    """The error object of a gateway error result, with the facts beside it (rule, ...)."""
    error = structured.get("error")
    if not isinstance(error, Mapping):
        return dict(structured)
    rest = {k: v for k, v in structured.items() if k != "error"}
    return {**rest, **error}

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
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

import mcp_types as types

ERROR_META_KEY = "llmgw/error"
"""``_meta`` key of an ``isError`` result: the error as an object (category, message, field,
rule, retry_after_seconds, ...)."""

_SHOWN_FACTS = ("category", "field", "rule", "retry_after_seconds")


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


def result_wire(result: ToolResult) -> dict[str, Any]:
    """A gateway result as the wire form of ``CallToolResult``: success with its structured
    content (also as text, as the spec asks), errors as text + ``_meta``."""
    if result.is_error:
        return error_wire(result.text, result.structured or {})
    structured = result.structured
    text = result.text
    if not text and structured is not None:
        text = json.dumps(structured)
    wire: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if structured is not None:
        wire["structuredContent"] = structured
    wire["isError"] = False
    return wire


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

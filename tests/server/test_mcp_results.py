"""The wire form of tool results, pinned to the SDK's own per-revision surface (mcp 2.3.0).

The quick path writes ``mcp_results.result_wire`` itself, without the SDK's
``serialize_server_result``; these tests are what tells a new SDK release that changed the
surface (a field renamed, dropped, or a default added) from one that did not. They also pin that
the SDK-served path (``call_result``, a model) and the quick path send the same thing, and that
the quick path's encoding is a valid JSON-RPC response.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
import pytest
from mcp_types.methods import serialize_server_result
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from llmgw_jupyter.server.mcp_quick import QuickCalls
from llmgw_jupyter.server.mcp_results import ERROR_META_KEY, call_result, result_wire


@dataclass
class Result:
    is_error: bool
    text: str
    structured: dict[str, Any] | None = field(default_factory=dict)


SUCCESS = Result(
    False, '{"job":{"id":"j1","status":"running"}}', {"job": {"id": "j1", "status": "running"}}
)
SUCCESS_NO_TEXT = Result(False, "", {"jobs": [], "note": "caf\u00e9 \U0001f600"})
DENIAL = Result(
    True,
    "[POLICY DENIED] codex_request_async: too many calls",
    {
        "decision": "deny",
        "rule": "limits.calls_per_minute",
        "retry_after_seconds": 12.5,
        "error": {"category": "rate_limited", "message": "too many calls", "field": None},
    },
)
FAILURE = Result(
    True,
    "not_found: job x not found",
    {"error": {"category": "not_found", "message": "job x not found", "field": "job_id"}},
)
RESULTS = [SUCCESS, SUCCESS_NO_TEXT, DENIAL, FAILURE]


@pytest.mark.parametrize("version", HANDSHAKE_PROTOCOL_VERSIONS)
@pytest.mark.parametrize("result", RESULTS, ids=["success", "no-text", "denial", "failure"])
def test_the_wire_form_is_the_sdks_surface(version: str, result: Result) -> None:
    wire = result_wire(result)
    assert serialize_server_result("tools/call", version, wire) == wire


@pytest.mark.parametrize("result", RESULTS, ids=["success", "no-text", "denial", "failure"])
def test_the_sdk_path_and_the_quick_path_send_the_same_result(result: Result) -> None:
    model = call_result(result).model_dump(by_alias=True, mode="json", exclude_none=True)
    for version in HANDSHAKE_PROTOCOL_VERSIONS:
        assert serialize_server_result("tools/call", version, model) == result_wire(result)


def test_errors_carry_their_facts_in_text_and_meta_and_no_structured_content() -> None:
    wire = result_wire(DENIAL)
    assert wire["isError"] is True and "structuredContent" not in wire
    text = wire["content"][0]["text"]
    assert text.startswith("[POLICY DENIED]")
    assert "rule: limits.calls_per_minute" in text and "retry_after_seconds: 12.5" in text
    assert wire["_meta"][ERROR_META_KEY]["category"] == "rate_limited"


def test_a_success_without_text_carries_its_structured_content_as_text() -> None:
    wire = result_wire(SUCCESS_NO_TEXT)
    assert json.loads(wire["content"][0]["text"]) == SUCCESS_NO_TEXT.structured
    assert wire["structuredContent"] == SUCCESS_NO_TEXT.structured


@pytest.mark.parametrize(
    "message",
    [
        {
            "jsonrpc": "2.0",
            "id": 5,
            "method": "tools/call",
            "params": {"name": "t", "arguments": {}},
        },
        {"jsonrpc": "2.0", "id": "p-1", "method": "ping"},
    ],
)
def test_the_quick_encoding_is_a_json_rpc_response(message: dict[str, Any]) -> None:
    async def call(tool: str, arguments: dict[str, Any], caller: Any, key: str) -> Result:
        return SUCCESS_NO_TEXT

    quick = QuickCalls(call, lambda name: True, lambda session: "owner")

    async def answer() -> bytes | None:
        return await quick.answer(message, "caller", "owner", "s1")

    raw = asyncio.run(answer())
    assert raw is not None
    raw.decode("utf-8")  # strict: UTF-8 JSON, lone surrogates escaped
    response = types.JSONRPCResponse.model_validate_json(raw)
    assert response.id == message["id"]
    expected = {} if message["method"] == "ping" else result_wire(SUCCESS_NO_TEXT)
    assert json.loads(raw)["result"] == expected


def test_a_call_cancelled_by_the_client_gets_no_answer_and_other_cancellations_propagate() -> None:
    started = asyncio.Event()

    async def call(tool: str, arguments: dict[str, Any], caller: Any, key: str) -> Result:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("not reached")

    quick = QuickCalls(call, lambda name: True, lambda session: "owner")
    message = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "t"}}

    async def scenario() -> None:
        by_client = asyncio.ensure_future(quick.answer(message, "c", "owner", "s1"))
        await started.wait()
        assert quick.cancel("s1", 9) is True
        assert await by_client is None  # no response, and the request's task goes on
        assert quick.cancel("s1", 9) is False  # nothing runs under that id any more

        started.clear()
        by_request = asyncio.ensure_future(quick.answer(message, "c", "owner", "s1"))
        await started.wait()
        by_request.cancel()  # the request itself (client gone): not an answer, a cancellation
        with pytest.raises(asyncio.CancelledError):
            await by_request

    asyncio.run(scenario())

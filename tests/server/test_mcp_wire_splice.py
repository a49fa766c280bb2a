"""The quick path's spliced answer (``mcp_results.answer_bytes``) is ``result_wire``, to the byte's
meaning: the same keys in the same order, the same text, the same structured content.

Why: the quick path no longer builds the wire dict; it splices the success's one JSON string
(made by pydantic-core in ``ToolResult``) into the JSON-RPC envelope. Anything the splice gets
wrong (an escape, a key order, a text that is not the JSON of ``structuredContent``) would reach
every client of the common calls, so it is compared here with the dict path for successes and
errors, with text that needs escaping and text that is not ASCII.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel

from llmgw_jupyter.gateway.result import ToolResult
from llmgw_jupyter.policy import Decision
from llmgw_jupyter.server.mcp_quick import QuickCalls
from llmgw_jupyter.server.mcp_results import (
    ErrorResult,
    answer_bytes,
    response_bytes,
    result_wire,
)

AWKWARD = 'caf\u00e9 \U0001f600 "quoted" back\\slash\nnew\tline \x00\x1f\x7f \u2028\u2029 </script>'


class Job(BaseModel):
    id: str
    status: str
    note: str | None = None
    cost: float | None = None
    tags: list[str] = []


class StatusOutput(BaseModel):
    job: Job
    events: list[dict[str, Any]] = []


def success(note: str | None = None, cost: float | None = 0.25) -> ToolResult:
    job = Job(id="j-1", status="running", note=note, cost=cost, tags=["a", note or "b"])
    return ToolResult.success(StatusOutput(job=job, events=[{"type": "x", "text": note}]))


SUCCESSES = {
    "plain": success(),
    "escapes and non-ASCII": success(AWKWARD),
    "exponent float": success("tiny", 1e-7),
    "lone surrogate": success("bad \udcff byte"),
}
ERRORS = {
    "failure": ToolResult.failure("not_found", f"job {AWKWARD} not found", field="job_id"),
    "denial": ToolResult.denied(
        Decision("deny", "too many calls", rule="limits.calls_per_minute", retry_after_seconds=12.5)
    ),
    "gateway error": ErrorResult("", {"category": "internal", "message": AWKWARD}),
}


def pairs(raw: bytes | str) -> Any:
    """The JSON as nested key/value lists: equal only with the same keys in the same order."""
    return json.loads(raw, object_pairs_hook=list)


@pytest.mark.parametrize("request_id", [7, 'id "with" \\ \u00e9'])
@pytest.mark.parametrize(
    "result", [*SUCCESSES.values(), *ERRORS.values()], ids=[*SUCCESSES, *ERRORS]
)
def test_the_spliced_answer_is_result_wire_in_its_envelope(
    request_id: str | int, result: Any
) -> None:
    raw = answer_bytes(request_id, result)
    expected = {"jsonrpc": "2.0", "id": request_id, "result": result_wire(result)}
    assert json.loads(raw) == expected
    assert pairs(raw) == pairs(response_bytes(request_id, result_wire(result)))
    raw.decode("utf-8")  # strict: a lone surrogate stays escaped


@pytest.mark.parametrize("result", SUCCESSES.values(), ids=list(SUCCESSES))
def test_a_success_text_is_the_json_of_its_structured_content(result: ToolResult) -> None:
    raw = answer_bytes(1, result).decode("utf-8")
    wire = json.loads(raw)["result"]
    text = wire["content"][0]["text"]
    assert json.loads(text) == wire["structuredContent"] == result.structured
    assert f'"structuredContent":{text},' in raw  # one JSON string, spliced as it is


def test_a_success_text_is_what_the_standard_library_writes() -> None:
    result = success('caf\u00e9 "q" \\ \n \x00 \u2028 \U0001f600')
    compact = json.dumps(result.structured, separators=(",", ":"), ensure_ascii=False)
    assert result.text == compact  # non-ASCII as it is (an agent reads "café", not "caf\u00e9")
    lone = success("bad \udcff byte")  # not UTF-8: the ASCII escapes the text always had
    assert lone.text == json.dumps(lone.structured, separators=(",", ":"))


def test_the_quick_path_encodes_a_success_once_and_builds_no_dict() -> None:
    encodings = dumps = 0

    class Counted(StatusOutput):
        def model_dump_json(self, *args: Any, **kwargs: Any) -> str:
            nonlocal encodings
            encodings += 1
            return super().model_dump_json(*args, **kwargs)

        def model_dump(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            nonlocal dumps
            dumps += 1
            return super().model_dump(*args, **kwargs)

    result = ToolResult.success(Counted(job=Job(id="j", status="done", note=AWKWARD)))
    message = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "t"}}

    async def call(tool: str, arguments: dict[str, Any], caller: Any, key: str) -> ToolResult:
        return result

    quick = QuickCalls(call, lambda name: True, lambda session: "owner")
    raw = asyncio.run(quick.answer(message, "caller", "owner", "s1"))
    assert raw is not None and (encodings, dumps) == (1, 0)
    assert json.loads(raw)["result"]["structuredContent"]["job"]["note"] == AWKWARD
    assert result.structured["job"]["note"] == AWKWARD  # made when read (REST, the SDK path)
    assert result.text and (encodings, dumps) == (1, 1)


def test_a_success_read_as_a_dict_first_matches_its_json() -> None:
    for result in (*SUCCESSES.values(), success(AWKWARD, 1e300)):
        structured = result.structured
        assert json.loads(result.text) == structured

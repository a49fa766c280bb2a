"""Bounds: every integer a caller sends is bounded in the schema, argument objects are bounded in
depth and size before anything walks them, job views outside a submission's answer carry a prompt
preview and the small arguments only (the rest on request), and a caller's session list names
only its own forks.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from llmgw_jupyter.records import LIGHT_ARG_KEYS
from llmgw_jupyter.tools.schemas import MAX_ARGUMENT_DEPTH, MAX_INT
from tools.gateway_harness import OWNER, Harness

WAIT_NOT = {"llm_job_watch": {"timeout_seconds": 0}}
# (tool, integer field): every integer input of every tool.
INTEGER_FIELDS = [
    ("llm_job_status", "after_seq"),
    ("llm_job_status", "limit"),
    ("llm_job_watch", "after_seq"),
    ("llm_job_result", "offset"),
    ("llm_job_result", "limit"),
    ("llm_job_list", "limit"),
    ("llm_job_list", "offset"),
    ("llm_session_list", "limit"),
    ("llm_session_list", "offset"),
]


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"type": "object", "properties": {"a": value}}
    return value


@pytest.mark.parametrize("value", [2**31, 2**63, 2**64, -(2**63)])
@pytest.mark.parametrize(("tool", "field"), INTEGER_FIELDS)
async def test_huge_integers_are_invalid_input_naming_the_field(
    fake_gateway: Harness, tool: str, field: str, value: int
) -> None:
    needs_job = tool in ("llm_job_status", "llm_job_watch", "llm_job_result")
    arguments: dict[str, Any] = {"job_id": "abc"} if needs_job else {}
    arguments[field] = value
    result = await fake_gateway.call(tool, arguments, OWNER)
    assert result.error == "invalid_input", result.text
    assert result.structured["error"]["field"] == field
    assert result.text.startswith(f"invalid_input: {field}: ")


@pytest.mark.parametrize(("tool", "field"), [("llm_job_status", "after_seq")])
async def test_the_largest_integer_still_works(
    fake_gateway: Harness, tool: str, field: str
) -> None:
    job = await fake_gateway.ok("codex_request_async", {"prompt": "hi"})
    out = await fake_gateway.ok(tool, {"job_id": job["job"]["id"], field: MAX_INT})
    assert out["events"] == []


async def test_deeply_nested_arguments_are_refused_before_any_walk(fake_gateway: Harness) -> None:
    for arguments, field in (
        ({"prompt": "x", "output_schema": nested(2000)}, "output_schema"),
        ({"prompt": "x", "unknown": nested(5000)}, "unknown"),
        ({"prompt": "x", "add_dirs": [nested(MAX_ARGUMENT_DEPTH)]}, "add_dirs"),
    ):
        result = await fake_gateway.call("codex_request_async", arguments, OWNER)
        assert result.error == "invalid_input", result.text
        assert result.structured["error"]["field"] == field
    decisions = [r.decision for r in fake_gateway.gateway.store.query_audit(caller="owner")]
    assert decisions == ["invalid"]  # audited (repeats counted, not written)


async def test_too_many_values_are_refused(fake_gateway: Harness) -> None:
    result = await fake_gateway.call(
        "codex_request_async", {"prompt": "x", "add_dirs": list(range(200_000))}, OWNER
    )
    assert result.error == "invalid_input"
    assert result.structured["error"]["field"] == "arguments"


async def test_job_views_carry_a_preview_and_small_arguments_full_ones_on_request(
    fake_gateway: Harness,
) -> None:
    schema = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "description": "d" * 200} for i in range(200)},
    }
    prompt = "[fake:hang] Explain this. " * 3000  # runs until cancelled: no echoed answer
    arguments = {
        "prompt": prompt,
        "output_schema": schema,
        "model": "gpt-5.5",
        "working_dir": str(fake_gateway.workdir),
        "idempotency_key": "k-1",
    }
    submitted = await fake_gateway.ok("codex_request_async", arguments)
    assert submitted["job"]["args"]["prompt"] == prompt  # the submitter's own answer is whole
    job_id = submitted["job"]["id"]

    listed = await fake_gateway.ok("llm_job_list", {})
    (view,) = listed["jobs"]
    assert set(view["args"]) <= set(LIGHT_ARG_KEYS)
    assert view["args"]["model"] == "gpt-5.5"
    assert view["args"]["working_dir"] == str(fake_gateway.workdir)
    assert {"prompt", "output_schema", "idempotency_key"} <= set(view["omitted_args"])
    assert prompt.startswith(view["prompt_preview"].rstrip("…. "))
    assert len(json.dumps(listed)) < 10_000  # the prompt and schema are ~100 KB

    for tool in ("llm_job_status", "llm_job_cancel", "llm_job_watch", "llm_job_result"):
        out = await fake_gateway.ok(tool, {"job_id": job_id, **WAIT_NOT.get(tool, {})})
        assert "prompt" not in out["job"]["args"], tool

    full = await fake_gateway.ok("llm_job_status", {"job_id": job_id, "include_args": True})
    assert full["job"]["args"]["prompt"] == prompt
    assert full["job"]["args"]["output_schema"] == schema
    assert full["job"]["omitted_args"] == []


async def test_a_grants_session_list_names_only_its_own_forks(fake_gateway: Harness) -> None:
    agent = fake_gateway.grant("agent", {"version": "1", "default": "allow"})
    mine = await fake_gateway.run("the grant's session", caller=agent)
    session = mine["session_id"]
    own_fork = await fake_gateway.ok(
        "codex_fork_session", {"prompt": "grant fork", "session_id": session}, agent
    )
    own_id = (await fake_gateway.finished(own_fork["job"]["id"])).session_id
    # The owner can no longer fork a grant's session (per-caller Codex homes), but stores from
    # before that change hold such forks: the owner's child of the grant's session.
    owners_id = "owners-fork-of-the-grants-session"
    fake_gateway.runtime.store.record_session(
        session_id=owners_id,
        provider="codex",
        caller="owner",
        parent_session_id=session,
        working_dir=None,
        job_id=own_fork["job"]["id"],
        ts=time.time(),
    )
    assert own_id and owners_id and own_id != owners_id

    seen = await fake_gateway.ok("llm_session_list", {}, agent)
    by_id = {s["session_id"]: s for s in seen["sessions"]}
    assert set(by_id) == {session, own_id}
    assert by_id[session]["children"] == [own_id]  # not the owner's fork
    assert owners_id not in json.dumps(seen)

    everything = await fake_gateway.ok("llm_session_list", {}, OWNER)
    parent = next(s for s in everything["sessions"] if s["session_id"] == session)
    assert sorted(parent["children"]) == sorted([own_id, owners_id])  # the owner sees all

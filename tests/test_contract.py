"""The domain records' JSON views are exactly the wire contract: same fields, values unchanged.

Every adapter serves ``record.to_dict()`` (or the tools' answers built from it) as a contract
model, and the lab extension's TypeScript types are generated from the models: a field added to
a record but not to the model (or the other way round) fails here, not in a browser.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from llmgw_jupyter import contract
from llmgw_jupyter.errors import ErrorCategory
from llmgw_jupyter.records import (
    JobEvent,
    JobRecord,
    JobStatus,
    OutputPage,
    SessionRecord,
    Usage,
)
from llmgw_jupyter.store.approvals import ApprovalRecord
from llmgw_jupyter.store.audit import AuditRecord
from llmgw_jupyter.store.grants import GrantRecord

T0 = 1_790_000_000.25


def job(**changes: Any) -> JobRecord:
    """A job with every field set; ``changes`` blank some out."""
    fields: dict[str, Any] = {
        "id": "j1",
        "provider": "codex",
        "tool": "codex_request_async",
        "kind": "exec",
        "caller": "grant:ci",
        "status": JobStatus.FAILED,
        "args": {"prompt": "long prompt", "model": "m", "output_schema": {"type": "object"}},
        "argv": ["codex", "exec", "-"],
        "working_dir": "/w",
        "idempotency_key": "key-1",
        "prompt_preview": "long prompt",
        "created_at": T0,
        "queued_at": T0 + 1,
        "started_at": T0 + 2,
        "finished_at": T0 + 3,
        "updated_at": T0 + 3,
        "exit_code": 1,
        "pid": 4242,
        "pid_start_time": 12.5,
        "runtime_id": "r1",
        "session_id": "s1",
        "parent_session_id": "s0",
        "usage": Usage(1, 2, 3, 4),
        "final_message": "no",
        "error_category": ErrorCategory.CLI_ERROR,
        "error_message": "exit 1",
        "cancel_reason": None,
        "last_seq": 7,
        "stdout_bytes": 100,
        "stderr_bytes": 5,
    }
    fields.update(changes)
    return JobRecord(**fields)


BLANK_JOB = {
    "status": JobStatus.QUEUED,
    "argv": None,
    "working_dir": None,
    "idempotency_key": None,
    "queued_at": None,
    "started_at": None,
    "finished_at": None,
    "exit_code": None,
    "pid": None,
    "session_id": None,
    "parent_session_id": None,
    "usage": Usage(),
    "final_message": None,
    "error_category": None,
    "error_message": None,
    "last_seq": 0,
}


def assert_exact(model: type[BaseModel], view: dict[str, Any]) -> None:
    """``view`` has exactly the model's fields and passes through it unchanged."""
    assert set(view) == set(model.model_fields), (
        f"{model.__name__}: only in the record {sorted(set(view) - set(model.model_fields))}, "
        f"only in the model {sorted(set(model.model_fields) - set(view))}"
    )
    assert model.model_validate(view).model_dump(mode="json") == view


@pytest.mark.parametrize("include_args", [True, False], ids=["full", "light"])
@pytest.mark.parametrize("changes", [{}, BLANK_JOB], ids=["every-field", "blank"])
def test_a_job_view_is_exactly_JobView(include_args: bool, changes: dict[str, Any]) -> None:
    view = job(**changes).to_dict(include_args=include_args)
    assert_exact(contract.JobView, view)
    if view["error"] is not None:
        assert_exact(contract.ErrorView, view["error"])
    assert_exact(contract.UsageView, view["usage"])


def test_the_light_view_names_what_it_leaves_out() -> None:
    light = contract.JobView.model_validate(job().to_dict(include_args=False))
    assert "prompt" not in light.args and {"prompt", "output_schema"} <= set(light.omitted_args)
    assert light.argv is None


def test_events_sessions_and_output_pages_are_exactly_their_views() -> None:
    assert_exact(
        contract.EventView, JobEvent("j1", 3, T0, "item.completed", "s", {"a": 1}).to_dict()
    )
    session = SessionRecord("s1", "codex", "owner", "s0", "/w", T0, "j1", "j2", T0 + 1, ["s2"])
    assert_exact(contract.SessionView, session.to_dict())
    blank = SessionRecord("s1", "codex", "owner", None, None, T0, None, None, T0)
    assert_exact(contract.SessionView, blank.to_dict())
    assert_exact(contract.OutputPageView, OutputPage("stdout", 0, "x", 1, 1, True).to_dict())


def test_approvals_grants_and_audit_entries_are_exactly_their_views() -> None:
    approval = ApprovalRecord(
        "a1", "grant:ci", "codex_request_async", {"prompt": "p"}, "j1", "denied", T0, T0 + 600,
        "owner", T0 + 5, "no", (),
    )  # fmt: skip
    assert_exact(contract.ApprovalView, approval.to_dict())
    assert_exact(
        contract.GrantView, GrantRecord("ci", "hash", {"version": "1"}, T0, None).to_dict()
    )
    assert_exact(contract.GrantView, GrantRecord("ci", "hash", None, T0, T0 + 1).to_dict())
    audit = AuditRecord(1, T0, "owner", "llm_job_list", "allow", "default", "", [], "0" * 64, None)
    assert_exact(contract.AuditEntryView, audit.to_dict())


def test_every_error_category_is_a_valid_error_body() -> None:
    for category in ErrorCategory:
        body = {"error": {"category": category.value, "message": "m", "field": None}}
        assert_exact(contract.ErrorBody, body)


def test_the_wire_models_have_one_json_schema_with_unique_names() -> None:
    """What scripts/gen_contract.py turns into the lab extension's TypeScript types."""
    names = [model.__name__ for model in contract.WIRE_MODELS]
    assert len(names) == len(set(names))
    summary = contract.Summary.model_json_schema()
    assert {"counts", "pending_approvals", "mcp_url", "policy_error"} <= set(summary["properties"])
    job_fields = set(contract.JobView.model_json_schema()["properties"])
    assert {"idempotency_key", "stdout_bytes", "stderr_bytes"} <= job_fields

"""The wire contract: every shape a caller of the gateway sees, defined once.

REST, MCP (``outputSchema`` and structured content), both kernel clients, the widgets and the
lab extension (TypeScript types generated from this module's JSON Schema) all derive from these
models. The domain records' JSON views (``records.py``) are checked against them in the tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_core import PydanticSerializationError

from llmgw_jupyter.errors import ErrorCategory
from llmgw_jupyter.records import JobStatus

StatusName = Literal[
    "awaiting_approval",
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "interrupted",
]
assert set(StatusName.__args__) == {s.value for s in JobStatus}  # type: ignore[attr-defined]


# -- outputs ------------------------------------------------------------------------------
class UsageView(BaseModel):
    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_output_tokens: int | None = None
    cost_usd: float | None = Field(
        default=None, description="What the run cost in US dollars, where the CLI reports it."
    )


class ErrorView(BaseModel):
    category: str | None = None
    message: str | None = None


class JobView(BaseModel):
    """A job as every caller sees it (``JobRecord.to_dict()``), arguments trimmed outside
    submission answers and ``llm_job_status`` with ``include_args`` (see ``LIGHT_ARG_KEYS``)."""

    id: str
    provider: str
    tool: str
    kind: str
    caller: str
    status: StatusName
    args: dict[str, Any]
    omitted_args: list[str] = Field(
        default_factory=list,
        description="Arguments left out of args here; llm_job_status with include_args: true "
        "returns them.",
    )
    argv: list[str] | None = None
    working_dir: str | None = None
    idempotency_key: str | None = None
    prompt_preview: str
    created_at: str
    queued_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str
    exit_code: int | None = None
    pid: int | None = None
    session_id: str | None = None
    parent_session_id: str | None = None
    usage: UsageView
    final_message: str | None = None
    error: ErrorView | None = None
    cancel_reason: str | None = None
    last_seq: int
    stdout_bytes: int
    stderr_bytes: int


class EventView(BaseModel):
    job_id: str
    seq: int
    ts: str
    type: str
    summary: str
    data: dict[str, Any]


class ApprovalView(BaseModel):
    id: str
    caller: str
    tool: str
    arguments: dict[str, Any]
    job_id: str | None = None
    status: str
    created_at: str
    expires_at: str
    decided_by: str | None = None
    decided_at: str | None = None
    reason: str | None = None


class SubmitOutput(BaseModel):
    job: JobView
    approval: ApprovalView | None = None
    message: str


class RequestOutput(BaseModel):
    done: bool
    job: JobView
    final_message: str | None = None
    session_id: str | None = None
    usage: UsageView | None = None
    approval: ApprovalView | None = None
    message: str


class JobEventsOutput(BaseModel):
    job: JobView
    events: list[EventView]
    next_after_seq: int
    done: bool


class OutputPageView(BaseModel):
    stream: str
    offset: int
    data: str
    next_offset: int
    size: int
    eof: bool


class JobResultOutput(BaseModel):
    done: bool
    job: JobView
    final_message: str | None = None
    session_id: str | None = None
    usage: UsageView
    exit_code: int | None = None
    error: ErrorView | None = None
    output: OutputPageView


class JobCancelOutput(BaseModel):
    job: JobView


class JobListOutput(BaseModel):
    jobs: list[JobView]
    total: int
    limit: int
    offset: int


class SessionView(BaseModel):
    session_id: str
    provider: str
    caller: str
    parent_session_id: str | None = None
    children: list[str]
    working_dir: str | None = None
    created_at: str
    created_by_job: str | None = None
    last_job_id: str | None = None
    last_used_at: str


class SessionListOutput(BaseModel):
    sessions: list[SessionView]


# A field a JSON answer may leave out (every other field is always sent, null when empty).
MAY_BE_ABSENT = "x-may-be-absent"


# -- REST-only answers --------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    """Every refusal's error object: REST bodies, failed tool results, the MCP endpoint's 503."""

    category: ErrorCategory
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """The one REST error shape, whatever refused (status by category: ``errors.HTTP_STATUS``)."""

    error: ErrorDetail


class ModelInfo(BaseModel):
    """What the status bar says about the model jobs use."""

    local_echo: bool
    label: str


class UsageTotal(BaseModel):
    """Usage summed over the jobs of one caller or one provider (``name``)."""

    name: str
    jobs: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_output_tokens: int
    cost_usd: float | None = Field(
        default=None, description="Summed over the jobs that reported a cost; null if none did."
    )
    priced_jobs: int = Field(description="How many of the jobs reported a cost.")


class UsageTotals(BaseModel):
    """Tokens and cost of every job the gateway keeps, per caller and per provider."""

    by_caller: list[UsageTotal]
    by_provider: list[UsageTotal]


class Summary(BaseModel):
    """``GET summary``: counts for the status bar, a broken owner policy to show, and the
    usage totals of the jobs panel."""

    counts: dict[str, int]
    pending_approvals: int
    mcp_url: str | None = None
    policy_error: str | None = Field(
        default=None,
        description="Why the owner policy file did not load (every tool call is then refused).",
    )
    model: ModelInfo | None = None
    usage: UsageTotals | None = None


class ToolCallAnswer(BaseModel):
    """``POST tools/{tool}`` and ``POST jobs``: a tool result; a failure adds ``error``."""

    is_error: bool
    text: str
    structured: dict[str, Any] | None = None
    error: ErrorDetail | None = Field(
        default=None, json_schema_extra={MAY_BE_ABSENT: True}, description="Failures only."
    )


class JobsPage(BaseModel):
    """``GET jobs``: light job views, newest first, and how many match."""

    jobs: list[JobView]
    total: int


class JobEventsPage(BaseModel):
    """``GET jobs/{id}/events``: events after a sequence number and the job (light view)."""

    events: list[EventView]
    job: JobView


class ApprovalsPage(BaseModel):
    approvals: list[ApprovalView]


class GrantView(BaseModel):
    """A grant as the owner sees it: the token's hash stays inside."""

    name: str
    policy: dict[str, Any] | None = None
    created_at: str
    revoked_at: str | None = None
    active: bool


class GrantsPage(BaseModel):
    grants: list[GrantView]


class GrantCreated(BaseModel):
    """``POST grants``: the token is shown this once."""

    name: str
    token: str
    grant: GrantView


class AuditEntryView(BaseModel):
    """One audit record: the arguments' keys and hash, never their values."""

    id: int
    ts: str
    caller: str
    tool: str
    decision: str
    rule: str
    message: str
    arg_keys: list[str]
    args_sha256: str
    approval_id: str | None = None


class AuditPage(BaseModel):
    records: list[AuditEntryView]


class OwnerPolicyView(BaseModel):
    path: str | None = None
    loaded: bool
    generation: int
    policy: dict[str, Any]


class PolicyState(BaseModel):
    """``GET policy``: the owner policy in force and the last load error."""

    owner: OwnerPolicyView
    last_error: str | None = None


# The models the lab extension's TypeScript types are generated from (scripts/gen_contract.py).
WIRE_MODELS: tuple[type[BaseModel], ...] = (
    JobView,
    EventView,
    ApprovalView,
    UsageView,
    ErrorView,
    OutputPageView,
    SessionView,
    JobResultOutput,
    JobEventsOutput,
    JobListOutput,
    SubmitOutput,
    RequestOutput,
    JobCancelOutput,
    SessionListOutput,
    ErrorDetail,
    ErrorBody,
    ModelInfo,
    UsageTotal,
    UsageTotals,
    Summary,
    ToolCallAnswer,
    JobsPage,
    JobEventsPage,
    ApprovalsPage,
    GrantView,
    GrantsPage,
    GrantCreated,
    AuditEntryView,
    AuditPage,
    OwnerPolicyView,
    PolicyState,
)


def output_json(output: BaseModel) -> str:
    """A wire model as compact JSON, the one way answers are written.

    pydantic-core, non-ASCII characters kept as they are (its ``ensure_ascii`` nearly doubles
    the cost, and an agent reads ``é`` better than ``\\u00e9``); a lone surrogate (from
    undecodable bytes) cannot be UTF-8, so then the standard library's ASCII escapes."""
    try:
        return output.model_dump_json()
    except PydanticSerializationError:
        return json.dumps(output.model_dump(mode="json"), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Encoded:
    """A tool's output with its JSON already made (``output_json``), e.g. a read answered
    from a cache: the gateway sends the JSON as it is instead of encoding the model again."""

    output: BaseModel
    json: str

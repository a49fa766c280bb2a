"""The tool registry: each tool defined once (name, description, models, annotations, handler)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import BaseModel

from llmgw_jupyter import contract
from llmgw_jupyter.tools import handlers, schemas
from llmgw_jupyter.tools.context import ToolContext

Handler = Callable[[ToolContext, Any], Awaitable[BaseModel]]


@dataclass(frozen=True)
class Annotations:
    """MCP tool annotations: Codex as an MCP client runs only readOnlyHint tools unprompted."""

    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool

    def to_dict(self) -> dict[str, bool]:
        return {
            "readOnlyHint": self.read_only,
            "destructiveHint": self.destructive,
            "idempotentHint": self.idempotent,
            "openWorldHint": self.open_world,
        }


READ_ONLY = Annotations(read_only=True, destructive=False, idempotent=True, open_world=False)
RUNS_AGENT = Annotations(read_only=False, destructive=True, idempotent=False, open_world=True)


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    title: str
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    annotations: Annotations
    handler: Handler

    @cached_property
    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()

    @cached_property
    def output_schema(self) -> dict[str, Any]:
        return self.output_model.model_json_schema()


_POLL = "Answers at once with the job id; follow it with llm_job_watch and llm_job_result."

TOOLS: tuple[ToolDefinition, ...] = (
    ToolDefinition(
        "codex_request",
        "Run a Codex request and wait",
        "Run an OpenAI Codex CLI request (codex exec) and wait up to wait_seconds for the answer. "
        "If it takes longer the job keeps running and the answer gives its id and how to poll. "
        "Pass session_id to resume an earlier session.",
        schemas.CodexRequestInput,
        contract.RequestOutput,
        RUNS_AGENT,
        handlers.codex_request,
    ),
    ToolDefinition(
        "codex_request_async",
        "Start a Codex request in the background",
        "Start an OpenAI Codex CLI request as a durable background job. "
        + _POLL
        + " Pass session_id to resume an earlier session.",
        schemas.CodexRequestAsyncInput,
        contract.SubmitOutput,
        RUNS_AGENT,
        handlers.codex_request_async,
    ),
    ToolDefinition(
        "codex_fork_session",
        "Fork a Codex session",
        "Fork an existing Codex session (session_id, or last: true for the most recent one) and "
        "run a prompt against the fork; the original session is left unchanged. " + _POLL,
        schemas.CodexForkInput,
        contract.SubmitOutput,
        RUNS_AGENT,
        handlers.codex_fork_session,
    ),
    ToolDefinition(
        "llm_job_status",
        "Job status and events",
        "State, timestamps and progress events after a sequence number of one job. Job views "
        "carry a prompt preview and the small arguments; include_args: true adds the rest.",
        schemas.JobStatusInput,
        contract.JobEventsOutput,
        READ_ONLY,
        handlers.llm_job_status,
    ),
    ToolDefinition(
        "llm_job_watch",
        "Wait for job progress",
        "Wait up to 30 s for new events of a job or its end; sends progress notifications when "
        "the request carries a progress token.",
        schemas.JobWatchInput,
        contract.JobEventsOutput,
        READ_ONLY,
        handlers.llm_job_watch,
    ),
    ToolDefinition(
        "llm_job_result",
        "Job result",
        "Final message, session id, usage and exit code of a job, with its raw stdout or stderr "
        "in pages (offset, limit).",
        schemas.JobResultInput,
        contract.JobResultOutput,
        READ_ONLY,
        handlers.llm_job_result,
    ),
    ToolDefinition(
        "llm_job_cancel",
        "Cancel a job",
        "Cancel a queued, waiting or running job (its whole process group is stopped).",
        schemas.JobCancelInput,
        contract.JobCancelOutput,
        Annotations(read_only=False, destructive=True, idempotent=True, open_world=False),
        handlers.llm_job_cancel,
    ),
    ToolDefinition(
        "llm_job_list",
        "List jobs",
        "Jobs newest first, filtered by status and provider, in pages.",
        schemas.JobListInput,
        contract.JobListOutput,
        READ_ONLY,
        handlers.llm_job_list,
    ),
    ToolDefinition(
        "llm_session_list",
        "List sessions",
        "Codex sessions with their parent and fork children.",
        schemas.SessionListInput,
        contract.SessionListOutput,
        READ_ONLY,
        handlers.llm_session_list,
    ),
)

REGISTRY: dict[str, ToolDefinition] = {tool.name: tool for tool in TOOLS}
TOOL_NAMES: tuple[str, ...] = tuple(REGISTRY)
# Tools whose work continues as a job: under require_approval they answer at once with a held job.
JOB_STARTING_TOOLS = frozenset({"codex_request_async", "codex_fork_session"})

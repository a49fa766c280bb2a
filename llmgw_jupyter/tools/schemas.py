"""Input and output models of every tool: the one schema MCP, REST and the magics derive from."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from llmgw_jupyter.contract import StatusName
from llmgw_jupyter.providers.base import ToolSpec

JobId = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="Job id.")

MAX_WAIT_SECONDS = 600.0
MAX_WATCH_SECONDS = 30.0
MAX_PAGE_BYTES = 1024 * 1024
# Every integer a caller sends is bounded: SQLite and the output reader take 64-bit integers and
# nothing here needs more than 31 bits (values near 2**63 used to end as internal errors).
MAX_INT = 2**31 - 1
# The shape of a whole argument object, checked before validation so that no walk over it
# (validation, audit hashing, message masking) recurses deeper or runs longer than this.
MAX_ARGUMENT_DEPTH = 64
MAX_ARGUMENT_NODES = 100_000
# Job views outside a submission's answer carry these arguments only; the rest (prompt, output
# schema, config overrides...) is named in ``omitted_args`` and given by llm_job_status with
# include_args: true. A prompt preview is always there.


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- inputs of a provider's tools ------------------------------------------------------------
@dataclass(frozen=True)
class ProviderInputs:
    """The input models of one provider's tools, built from its request arguments."""

    request_async: type[BaseModel]  # <name>_request_async: the arguments plus session_id
    request: type[BaseModel]  # <name>_request: ... plus wait_seconds
    fork: type[BaseModel]  # <name>_fork_session: the arguments plus session_id or last


def _one_source(model: Any) -> Any:
    if (model.session_id is None) == (not model.last):
        raise ValueError("give exactly one of session_id or last: true")
    return model


@cache
def provider_inputs(name: str, spec: ToolSpec) -> ProviderInputs:
    """``codex`` -> CodexRequestAsyncInput, CodexRequestInput, CodexForkInput (one class each,
    made once: the schema titles and field order are those of the hand-written models)."""
    prefix = "".join(part.capitalize() for part in name.split("_"))
    session: Any = spec.session_id | None
    validators: dict[str, Any] = {"_one_source": model_validator(mode="after")(_one_source)}
    request_async = create_model(
        f"{prefix}RequestAsyncInput",
        __base__=spec.args_model,
        __module__=__name__,
        session_id=(
            session,
            Field(
                default=None,
                description=f"Resume this {spec.label} session instead of starting a new one.",
            ),
        ),
    )
    request = create_model(
        f"{prefix}RequestInput",
        __base__=request_async,
        __module__=__name__,
        wait_seconds=(
            float,
            Field(
                default=45.0,
                ge=0,
                le=MAX_WAIT_SECONDS,
                description="How long to wait for the answer; after that the job goes on and the "
                "answer says how to poll it.",
            ),
        ),
    )
    fork = create_model(
        f"{prefix}ForkInput",
        __base__=spec.args_model,
        __module__=__name__,
        __validators__=validators,
        session_id=(session, Field(default=None, description="Session to fork.")),
        last=(
            bool,
            Field(
                default=False,
                description="Fork the most recent session this gateway knows (within "
                "working_dir if set).",
            ),
        ),
    )
    return ProviderInputs(request_async, request, fork)


class JobStatusInput(_Input):
    job_id: str = JobId
    after_seq: int = Field(
        default=0, ge=0, le=MAX_INT, description="Return events after this sequence number."
    )
    limit: int = Field(default=100, ge=1, le=1000, description="Most events to return.")
    include_args: bool = Field(
        default=False,
        description="Return the job's full arguments (prompt, output_schema, config_overrides); "
        "other views carry a prompt preview and the small arguments only.",
    )


class JobWatchInput(_Input):
    job_id: str = JobId
    after_seq: int = Field(
        default=0, ge=0, le=MAX_INT, description="Wait for events after this number."
    )
    timeout_seconds: float = Field(
        default=MAX_WATCH_SECONDS,
        ge=0,
        le=MAX_WATCH_SECONDS,
        description="Longest wait for new events or the job's end.",
    )


class JobResultInput(_Input):
    job_id: str = JobId
    stream: Literal["stdout", "stderr"] = Field(default="stdout", description="Raw stream to page.")
    offset: int = Field(
        default=0, ge=0, le=MAX_INT, description="Byte offset of the raw output page."
    )
    limit: int = Field(default=65536, ge=0, le=MAX_PAGE_BYTES, description="Page size in bytes.")


class JobCancelInput(_Input):
    job_id: str = JobId


class JobListInput(_Input):
    status: StatusName | None = Field(default=None, description="Only jobs in this state.")
    statuses: list[StatusName] | None = Field(
        default=None, max_length=16, description="Only jobs in any of these states."
    )
    provider: str | None = Field(default=None, max_length=64, description="Only this provider.")
    caller: str | None = Field(
        default=None,
        pattern=r"^(owner|grant:[a-z0-9][a-z0-9_-]{0,63})$",
        description='Only this caller\'s jobs ("owner" or "grant:<name>"); a grant always sees '
        "its own jobs only.",
    )
    limit: int = Field(default=20, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=MAX_INT)


class SessionListInput(_Input):
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=MAX_INT)

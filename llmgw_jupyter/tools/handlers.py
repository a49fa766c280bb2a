"""Tool handlers: thin functions over the runtime. Policy and approval happen before them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llmgw_jupyter.contract import (
    ApprovalView,
    Encoded,
    EventView,
    JobCancelOutput,
    JobEventsOutput,
    JobListOutput,
    JobResultOutput,
    JobView,
    OutputPageView,
    RequestOutput,
    SessionListOutput,
    SessionView,
    SubmitOutput,
    UsageView,
)
from llmgw_jupyter.errors import InvalidInputError, NotFoundError
from llmgw_jupyter.records import JobRecord, JobSpec
from llmgw_jupyter.tools.context import ToolContext
from llmgw_jupyter.tools.schemas import (
    JobCancelInput,
    JobListInput,
    JobResultInput,
    JobStatusInput,
    JobWatchInput,
    SessionListInput,
)

_TOOL_ONLY_FIELDS = {"wait_seconds", "last"}


def job_view(
    record: JobRecord,
    *,
    full_args: bool = False,
    light_arg_keys: Mapping[str, Sequence[str]] | None = None,
) -> JobView:
    """The job as a caller sees it; without ``full_args`` only the small arguments are kept, so
    a list or a poll never echoes a huge prompt, output schema or override table. Which are
    small is the job's provider's say (``light_arg_keys``), else the records' default."""
    view = record.to_dict(include_args=full_args)
    keys = (light_arg_keys or {}).get(record.provider)
    if not full_args and keys is not None:
        view["args"] = {key: record.args[key] for key in keys if key in record.args}
        view["omitted_args"] = sorted(set(record.args) - set(keys))
    return JobView.model_validate(view)


def _view(ctx: ToolContext, record: JobRecord, *, full_args: bool = False) -> JobView:
    return job_view(record, full_args=full_args, light_arg_keys=ctx.light_arg_keys)


def visible_job(ctx: ToolContext, job_id: str) -> JobRecord:
    """Another caller's job does not exist for a grant: same answer as an unknown id."""
    record = ctx.runtime.get(job_id)
    if record is None or not (ctx.caller.is_owner or record.caller == ctx.caller.key):
        raise NotFoundError(f"job {job_id}")
    return record


def _check_session(ctx: ToolContext, provider: str, label: str, session_id: str) -> None:
    """Sessions are the caller's own: each caller's sessions live in its own home of the CLI.

    A grant is told another caller's session (or another CLI's) does not exist; the owner, who
    can see every session, is told why it cannot continue it (and sessions unknown to the
    gateway, e.g. from the owner's own use of the CLI, stay the owner's to try)."""
    session = ctx.runtime.session(session_id)
    if ctx.caller.is_owner:
        if session is not None and session.caller != ctx.caller.key:
            raise InvalidInputError(
                "session_id",
                f"session {session_id} belongs to {session.caller}: every caller's sessions live "
                f"in its own {label} home, out of other callers' reach; read its answers with "
                "llm_job_result, or start a new request",
            )
        if session is not None and session.provider != provider:
            raise InvalidInputError(
                "session_id",
                f"session {session_id} is a {session.provider} session; continue it with "
                f"{session.provider}_request_async",
            )
        return
    if session is None or session.caller != ctx.caller.key or session.provider != provider:
        raise NotFoundError(f"session {session_id}")


def _poll_hint(record: JobRecord) -> str:
    return (
        f'Watch it with llm_job_watch {{"job_id": "{record.id}", "after_seq": {record.last_seq}}} '
        f'and collect the answer with llm_job_result {{"job_id": "{record.id}"}}.'
    )


async def _submit(
    ctx: ToolContext, provider: str, tool: str, kind: str, args: dict[str, Any]
) -> tuple[JobRecord, ApprovalView | None]:
    """Start (or, under approval, hold) a job; a repeated idempotency key returns the old one."""
    key = args.get("idempotency_key")
    existing = ctx.runtime.find_by_idempotency_key(ctx.caller.key, key) if key else None
    if existing is not None:
        return existing, None
    spec = JobSpec(
        provider=provider,
        tool=tool,
        kind=kind,
        args=args,
        caller=ctx.caller.key,
        idempotency_key=key,
        hold=ctx.needs_approval,
    )
    record = await ctx.runtime.submit(spec)
    if ctx.job_submitted is not None:
        ctx.job_submitted(record.id)
    approval = None
    if ctx.needs_approval and ctx.hold_for_approval is not None:
        approval = ApprovalView.model_validate(await ctx.hold_for_approval(record.id))
    return record, approval


def _expiry(expires_at: str | None) -> str:
    """'expires in 9 min (at 2026-12-02 04:53:04 UTC)': the same words as the UI."""
    if not expires_at:
        return "no expiry"
    expires = datetime.fromisoformat(expires_at)
    minutes = max(0, round((expires.timestamp() - time.time()) / 60))
    when = expires.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"expires in {minutes} min (at {when})"


def _submit_message(record: JobRecord, approval: ApprovalView | None) -> str:
    if approval is not None:
        return (
            f"Job {record.id} waits for the owner's approval (approval {approval.id}, "
            f"{_expiry(approval.expires_at)}); it starts when approved. " + _poll_hint(record)
        )
    return f"Job {record.id} is {record.status.value}. " + _poll_hint(record)


def _request_args(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(exclude=_TOOL_ONLY_FIELDS, exclude_none=True)


@dataclass(frozen=True)
class ProviderHandlers:
    """The handlers of one provider's tools: ``<provider>_request``, ``_request_async`` and
    ``_fork_session``. Arguments arrive validated by the tool's input model."""

    provider: str
    label: str

    def tool(self, suffix: str) -> str:
        return f"{self.provider}_{suffix}"

    async def request_async(self, ctx: ToolContext, args: Any) -> SubmitOutput:
        if args.session_id:
            _check_session(ctx, self.provider, self.label, args.session_id)
        kind = "resume" if args.session_id else "exec"
        record, approval = await _submit(
            ctx, self.provider, self.tool("request_async"), kind, _request_args(args)
        )
        return SubmitOutput(
            job=_view(ctx, record, full_args=True),
            approval=approval,
            message=_submit_message(record, approval),
        )

    async def fork_session(self, ctx: ToolContext, args: Any) -> SubmitOutput:
        session_id = args.session_id
        if args.last:
            scope = None if ctx.caller.is_owner else ctx.caller.key
            # Sessions remember the resolved dir (as the provider resolves it): like with like.
            within = (
                str(Path(args.working_dir).expanduser().resolve()) if args.working_dir else None
            )
            latest = ctx.runtime.latest_session(
                caller=scope, provider=self.provider, working_dir=within
            )
            if latest is None:
                where = f" in {args.working_dir}" if args.working_dir else ""
                raise NotFoundError(f"a session{where} known to this gateway")
            session_id = latest.session_id
        assert session_id is not None
        _check_session(ctx, self.provider, self.label, session_id)
        fork_args = {**_request_args(args), "session_id": session_id}
        record, approval = await _submit(
            ctx, self.provider, self.tool("fork_session"), "fork", fork_args
        )
        return SubmitOutput(
            job=_view(ctx, record, full_args=True),
            approval=approval,
            message=_submit_message(record, approval),
        )

    async def request(self, ctx: ToolContext, args: Any) -> RequestOutput:
        """Run and wait up to ``wait_seconds``; the job outlives the wait (and the client's
        timeout)."""
        if args.session_id:
            _check_session(ctx, self.provider, self.label, args.session_id)
        kind = "resume" if args.session_id else "exec"
        record, approval = await _submit(
            ctx, self.provider, self.tool("request"), kind, _request_args(args)
        )
        record = await _follow(ctx, record, args.wait_seconds)
        if not record.is_terminal:
            return RequestOutput(
                done=False,
                job=_view(ctx, record, full_args=True),
                approval=approval,
                message=f"Job {record.id} is still {record.status.value} after "
                f"{args.wait_seconds:g} s; it goes on in the background. " + _poll_hint(record),
            )
        return RequestOutput(
            done=True,
            job=_view(ctx, record, full_args=True),
            final_message=record.final_message,
            session_id=record.session_id,
            usage=UsageView.model_validate(record.usage.to_dict()),
            message=f"Job {record.id} {record.status.value}."
            + (f" {record.error_message}" if record.error_message else ""),
        )


async def _follow(ctx: ToolContext, record: JobRecord, seconds: float) -> JobRecord:
    """Wait for the end, forwarding each event as progress; woken by the runtime, not polling."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    after = record.last_seq
    while not record.is_terminal:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        events, record = await ctx.runtime.wait_for_events(record.id, after, remaining)
        for event in events:
            after = event.seq
            await ctx.report(event.seq, None, f"{event.type}: {event.summary}")
    return record


async def llm_job_status(ctx: ToolContext, args: JobStatusInput) -> JobEventsOutput | Encoded:
    """The job and its events after ``after_seq``; an unchanged store answers from the cache."""

    def make() -> JobEventsOutput:
        record = visible_job(ctx, args.job_id)
        events = ctx.runtime.events(record.id, args.after_seq, args.limit)
        return _events_output(ctx, record, events, args.after_seq, full_args=args.include_args)

    if ctx.reads is None:
        return make()
    key = (
        "llm_job_status",
        ctx.caller.key,
        args.job_id,
        args.after_seq,
        args.limit,
        args.include_args,
    )
    return ctx.reads.answer(key, make)


async def llm_job_watch(ctx: ToolContext, args: JobWatchInput) -> JobEventsOutput:
    record = visible_job(ctx, args.job_id)
    events, record = await ctx.runtime.wait_for_events(
        record.id, args.after_seq, args.timeout_seconds
    )
    for event in events:
        await ctx.report(event.seq, None, f"{event.type}: {event.summary}")
    return _events_output(ctx, record, events, args.after_seq)


def _events_output(
    ctx: ToolContext,
    record: JobRecord,
    events: list[Any],
    after_seq: int,
    *,
    full_args: bool = False,
) -> JobEventsOutput:
    return JobEventsOutput(
        job=_view(ctx, record, full_args=full_args),
        events=[EventView.model_validate(e.to_dict()) for e in events],
        next_after_seq=events[-1].seq if events else after_seq,
        done=record.is_terminal,
    )


async def llm_job_result(ctx: ToolContext, args: JobResultInput) -> JobResultOutput:
    record = visible_job(ctx, args.job_id)
    page = ctx.runtime.read_output(record.id, args.stream, args.offset, args.limit)
    view = _view(ctx, record)
    return JobResultOutput(
        done=record.is_terminal,
        job=view,
        final_message=record.final_message,
        session_id=record.session_id,
        usage=view.usage,
        exit_code=record.exit_code,
        error=view.error,
        output=OutputPageView.model_validate(page.to_dict()),
    )


async def llm_job_cancel(ctx: ToolContext, args: JobCancelInput) -> JobCancelOutput:
    record = visible_job(ctx, args.job_id)
    cancelled = await ctx.runtime.cancel(record.id, f"cancelled by {ctx.caller.key}")
    return JobCancelOutput(job=_view(ctx, cancelled))


async def llm_job_list(ctx: ToolContext, args: JobListInput) -> JobListOutput:
    caller = args.caller if ctx.caller.is_owner else ctx.caller.key
    if args.caller is not None and args.caller != caller:
        raise InvalidInputError("caller", "a grant lists its own jobs only")
    statuses = [*([args.status] if args.status else []), *(args.statuses or [])]
    records, total = ctx.runtime.list_jobs(
        status=statuses or None,
        provider=args.provider,
        caller=caller,
        limit=args.limit,
        offset=args.offset,
    )
    return JobListOutput(
        jobs=[_view(ctx, r) for r in records], total=total, limit=args.limit, offset=args.offset
    )


async def llm_session_list(ctx: ToolContext, args: SessionListInput) -> SessionListOutput:
    caller = None if ctx.caller.is_owner else ctx.caller.key
    sessions = ctx.runtime.sessions(caller, limit=args.limit, offset=args.offset)
    return SessionListOutput(sessions=[SessionView.model_validate(s.to_dict()) for s in sessions])

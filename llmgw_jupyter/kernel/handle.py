"""``JobHandle``: one gateway job as a notebook object (status, events, result, fork, cancel).

State changes arrive two ways and are merged idempotently by sequence number: a task on the
kernel's event loop that follows the job while the kernel is idle, and blocking waits
(``result()``, ``--wait``) that run in the cell's own thread. Both run on the kernel's main
thread, so listeners (the widget) are only ever called there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llmgw_jupyter.kernel.client import MAX_WAIT_SECONDS, GatewayCallError, GatewayClient
from llmgw_jupyter.kernel.presentation import (
    JobState,
    callout_html,
    describe_state,
    format_usage,
    job_duration,
    provider_label,
    state_badge_html,
)
from llmgw_jupyter.kernel.tasks import RETRY_DELAYS, keep, update_display
from llmgw_jupyter.records import ACTIVE_STATUSES as _ACTIVE
from llmgw_jupyter.records import TERMINAL_STATUSES as _TERMINAL
from llmgw_jupyter.render import escape_markdown, escape_text, markdown_to_html, text_to_html

if TYPE_CHECKING:
    from llmgw_jupyter.kernel.widget import JobWidget

log = logging.getLogger(__name__)
# Job views carry statuses as plain strings: the records' sets, as those strings.
TERMINAL_STATUSES = frozenset(status.value for status in _TERMINAL)
ACTIVE_STATUSES = frozenset(status.value for status in _ACTIVE)
MAX_EVENTS_KEPT = 5000
SESSION_WAIT_SECONDS = 60.0
JOB_MIME = "application/vnd.llmgw.job+json"
"""A job output of its own: the lab extension shows the job live from the server with it, so the
output outlives the kernel (and its widget models)."""
JOB_MIME_VERSION = 1
SNAPSHOT_ANSWER_CHARS = 20_000

Listener = Callable[["JobHandle", list[dict[str, Any]]], None]


def parse_ts(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value).timestamp()


@dataclass
class JobResult:
    """A finished job's answer; displays as safely rendered Markdown with its usage figures."""

    job_id: str
    status: str
    final_message: str | None
    session_id: str | None
    usage: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def __str__(self) -> str:
        return self.final_message or ""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Terminal IPython: the answer as text, then one line of figures."""
        if self.ok:
            printer.text(self.final_message or "(no answer)")
        else:
            printer.text(f"job {self.job_id} {self.status}: {(self.error or {}).get('message')}")
        printer.break_()
        printer.text(self._footer())

    def _footer(self, *, as_html: bool = False) -> str:
        """``job ID · session ID · tokens: ...``; ids in ``<code>`` and escaped for HTML."""

        def value(text: str) -> str:
            return f"<code>{escape_text(text)}</code>" if as_html else text

        usage = format_usage(self.usage)
        return " · ".join(
            part
            for part in (
                f"job {value(self.job_id)}",
                f"session {value(self.session_id)}" if self.session_id else "",
                escape_text(usage) if as_html else usage,
            )
            if part
        )

    def _repr_html_(self) -> str:
        """The answer rendered safely: it comes from an agent, so it is never trusted markup."""
        if self.ok:
            body = (
                markdown_to_html(self.final_message)
                if self.final_message
                else "<p><i>(no answer)</i></p>"
            )
        else:
            message = (self.error or {}).get("message") or self.status
            body = (
                f"<p><b>Job {escape_text(self.job_id)} {escape_text(self.status)}:</b> "
                f"{text_to_html(message)}</p>"
            )
        footer = f'<small class="llmgw-result-footer">{self._footer(as_html=True)}</small>'
        return f'<div class="llmgw-result">{body}{footer}</div>'


@dataclass(frozen=True)
class _Snapshot:
    """The parts of a job's text snapshot, before they become Markdown or HTML."""

    kind: str
    state: JobState
    duration: str
    preview: str | None
    error: str | None
    answer: str | None


class JobError(Exception):
    """``result()`` of a job that did not succeed (failed, cancelled, timed out, interrupted)."""

    def __init__(self, result: JobResult) -> None:
        message = (result.error or {}).get("message") or result.status
        super().__init__(f"job {result.job_id} {result.status}: {message}")
        self.result = result


class JobHandle:
    """A job of the gateway, live in the notebook. Re-executing a cell never cancels it."""

    def __init__(
        self,
        client: GatewayClient,
        job: Mapping[str, Any],
        *,
        approval: Mapping[str, Any] | None = None,
    ) -> None:
        self._client = client
        self._job: dict[str, Any] = dict(job)
        self._events: list[dict[str, Any]] = []
        self._after = 0
        self._listeners: list[Listener] = []
        self._approval = dict(approval) if approval else None
        self._approval_stale = False  # the job left awaiting_approval: the record needs a look
        self._displays: list[Any] = []  # IPython DisplayHandles of this job's outputs
        self._follow_task: asyncio.Task[None] | None = None
        self._widget: JobWidget | None = None
        self._shown_in: int | None = None
        self.lost: str | None = None  # why following stopped before the end

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_submit(cls, client: GatewayClient, structured: Mapping[str, Any]) -> JobHandle:
        """From the answer of ``codex_request_async`` / ``codex_fork_session``."""
        return cls(client, structured["job"], approval=structured.get("approval"))

    @classmethod
    def attach(cls, client: GatewayClient, job_id: str) -> JobHandle:
        """Re-attach to any job (e.g. after a kernel restart), with its events so far."""
        handle = cls(client, client.blocking(client.get_job(job_id)))
        handle.refresh()
        return handle

    # -- state -------------------------------------------------------------------------------
    @property
    def client(self) -> GatewayClient:
        return self._client

    @property
    def id(self) -> str:
        return str(self._job["id"])

    @property
    def job(self) -> dict[str, Any]:
        """The last known JobView (no request)."""
        return self._job

    @property
    def done(self) -> bool:
        return self._job["status"] in TERMINAL_STATUSES

    @property
    def status(self) -> str:
        """Current state; asks the gateway unless the job has already ended."""
        if not self.done:
            self.refresh()
        return str(self._job["status"])

    @property
    def events(self) -> list[dict[str, Any]]:
        """All progress events so far (fetched up to now)."""
        if not self.done or self._after < int(self._job.get("last_seq") or 0):
            self.refresh()
        return list(self._events)

    def events_so_far(self) -> list[dict[str, Any]]:
        """The events fetched so far (no request)."""
        return list(self._events)

    @property
    def session_id(self) -> str | None:
        if self._job.get("session_id") is None and not self.done:
            self.refresh()
        return self._job.get("session_id")

    @property
    def approval(self) -> dict[str, Any] | None:
        """The last known approval record of this job (None when it had none or is unknown)."""
        return self._approval

    @property
    def approval_stale(self) -> bool:
        """The job left ``awaiting_approval`` after the record was read: it was decided."""
        return self._approval_stale

    @property
    def elapsed(self) -> float:
        """Seconds queued or running so far (or in total, once ended)."""
        start = parse_ts(self._job.get("started_at")) or parse_ts(self._job.get("created_at"))
        end = parse_ts(self._job.get("finished_at")) or time.time()
        return max(0.0, end - start) if start else 0.0

    def refresh(self) -> JobHandle:
        """Fetch the job and any new events now (blocking, short)."""
        while True:
            events, job = self._client.blocking(self._client.wait_events(self.id, self._after, 0))
            self.merge_update(job, events)
            if not events or self._after >= int(job.get("last_seq") or 0):
                return self

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def merge_update(
        self, job: Mapping[str, Any], events: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        """Merge a job view and events fetched anywhere into this handle, then tell listeners.

        Views older than the one held and events already seen are ignored, so the follow task
        and a blocking wait may both deliver the same update.
        """
        fresh = [dict(event) for event in events if int(event["seq"]) > self._after]
        if fresh:
            self._events.extend(fresh)
            del self._events[:-MAX_EVENTS_KEPT]
            self._after = int(fresh[-1]["seq"])
        changed = bool(fresh)
        if _version(job) >= _version(self._job) and dict(job) != self._job:
            self._job = dict(job)
            changed = True
        approval = self._approval
        if (
            approval is not None
            and approval.get("status") == "pending"
            and self._job["status"] != "awaiting_approval"
        ):
            self._approval_stale = True
        if changed:
            self._notify(fresh)
            if self.done and self._displays:
                self._update_displays()

    def _notify(self, fresh: list[dict[str, Any]]) -> None:
        for listener in list(self._listeners):
            try:
                listener(self, fresh)
            except Exception:  # one broken view must not stop the others or the follow task
                log.exception("listener of job %s failed", self.id)

    def _set_lost(self, reason: str) -> None:
        self.lost = reason
        self._notify([])

    # -- waiting -----------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends or ``timeout`` passes; True when it ended.

        KeyboardInterrupt (Ctrl-C, a kernel interrupt) stops the wait; the job goes on.
        """
        loop_time = time.monotonic
        deadline = None if timeout is None else loop_time() + timeout
        while not self.done:
            remaining = MAX_WAIT_SECONDS if deadline is None else deadline - loop_time()
            if remaining <= 0:
                break
            chunk = min(remaining, MAX_WAIT_SECONDS)
            events, job = self._client.blocking(
                self._client.wait_events(self.id, self._after, chunk), timeout=chunk + 60
            )
            self.merge_update(job, events)
        return self.done

    def result(self, timeout: float | None = None) -> JobResult:
        """The answer, waiting for it; raises ``TimeoutError`` or ``JobError`` (not succeeded)."""
        if not self.wait(timeout):
            raise TimeoutError(
                f"job {self.id} is still {self._job['status']} after {timeout:g} s; "
                "it keeps running"
            )
        return self._result()

    def _result(self) -> JobResult:
        result = self.current_result()
        if not result.ok:
            raise JobError(result)
        return result

    def current_result(self) -> JobResult:
        """What the job has produced so far (no waiting, no request)."""
        job = self._job
        return JobResult(
            job_id=self.id,
            status=str(job["status"]),
            final_message=job.get("final_message"),
            session_id=job.get("session_id"),
            usage=dict(job.get("usage") or {}),
            error=job.get("error"),
            exit_code=job.get("exit_code"),
        )

    async def _await(self) -> JobResult:
        while not self.done:
            events, job = await self._client.wait_events(self.id, self._after, MAX_WAIT_SECONDS)
            self.merge_update(job, events)
        return self._result()

    def __await__(self) -> Generator[Any, None, JobResult]:
        """``result = await job`` in a cell: the kernel keeps serving while it waits."""
        return self._await().__await__()

    # -- following on the kernel's loop --------------------------------------------------------
    def follow(self) -> asyncio.Task[None] | None:
        """Start (once) the task that pushes events to listeners; None without a running loop."""
        if self._follow_task is not None and not self._follow_task.done():
            return self._follow_task
        if self.done and self._after >= int(self._job.get("last_seq") or 0):
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # terminal IPython between cells: nothing runs a loop
            return None
        task = keep(loop.create_task(self._follow(), name=f"llmgw-follow-{self.id}"))
        self._follow_task = task
        return task

    async def _follow(self) -> None:
        failures = 0
        while not self.done or self._after < int(self._job.get("last_seq") or 0):
            try:
                events, job = await self._client.wait_events(self.id, self._after, MAX_WAIT_SECONDS)
            except GatewayCallError as error:
                if error.category == "not_found" or failures >= len(RETRY_DELAYS):
                    self._set_lost(f"lost contact with the gateway: {error.message}")
                    return
                await asyncio.sleep(RETRY_DELAYS[failures])  # back off; not a polling loop
                failures += 1
                continue
            except Exception as error:  # a bug: say so in the widget instead of dying silently
                log.exception("following job %s failed", self.id)
                self._set_lost(f"stopped following: {type(error).__name__}: {error}")
                return
            failures = 0
            self.lost = None
            self.merge_update(job, events)

    # -- actions -----------------------------------------------------------------------------
    def cancel(self) -> str:
        """Cancel the job (its whole process group); returns the new status."""
        job = self._client.blocking(self._client.cancel_job(self.id))
        self.merge_update(job)
        return str(self._job["status"])

    async def acancel(self) -> str:
        job = await self._client.cancel_job(self.id)
        self.merge_update(job)
        return str(self._job["status"])

    def fork(self, prompt: str, **options: Any) -> JobHandle:
        """Run ``prompt`` against a fork of this job's session; the original stays unchanged.

        ``options`` are the fork tool's arguments of this job's provider (``codex_fork_session``:
        model, sandbox, working_dir, ...; ``claude_fork_session``: model, permission_mode, ...).
        """
        session = self._session_for_fork()
        arguments = {**self._fork_defaults(), **options, "prompt": prompt, "session_id": session}
        structured = self._client.blocking(self._client.call_tool(self._fork_tool, arguments))
        return JobHandle.from_submit(self._client, structured)

    async def afork(self, prompt: str, **options: Any) -> JobHandle:
        session = self._job.get("session_id")
        if session is None:
            raise GatewayCallError("invalid_input", f"job {self.id} has no session yet")
        arguments = {**self._fork_defaults(), **options, "prompt": prompt, "session_id": session}
        structured = await self._client.call_tool(self._fork_tool, arguments)
        return JobHandle.from_submit(self._client, structured)

    @property
    def _fork_tool(self) -> str:
        """The fork tool of the provider that ran this job."""
        return f"{self._job.get('provider') or 'codex'}_fork_session"

    def _fork_defaults(self) -> dict[str, Any]:
        """A fork works where its parent worked, unless told otherwise."""
        working_dir = self._job.get("working_dir")
        return {"working_dir": working_dir} if working_dir else {}

    def _session_for_fork(self) -> str:
        """The session id, waiting briefly for a queued or running job to report it."""
        deadline = time.monotonic() + SESSION_WAIT_SECONDS
        while self.session_id is None and self._job["status"] in ("queued", "running"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            events, job = self._client.blocking(
                self._client.wait_events(self.id, self._after, min(remaining, MAX_WAIT_SECONDS))
            )
            self.merge_update(job, events)
        session = self._job.get("session_id")
        if session is None:
            raise GatewayCallError(
                "invalid_input",
                f"job {self.id} has no session to fork (it is {self._job['status']})",
                field="session_id",
            )
        return str(session)

    def approve(self) -> str:
        """Approve this job's pending request (the owner's decision); returns the new status."""
        return self._client.blocking(self.adecide(True))

    def deny(self) -> str:
        return self._client.blocking(self.adecide(False))

    async def adecide(self, approve: bool) -> str:
        approval = await self.apending_approval()
        if approval is None:
            raise GatewayCallError(
                "not_found", f"job {self.id} has no pending approval (it is {self._job['status']})"
            )
        self._approval = await self._client.decide_approval(approval["id"], approve)
        self._approval_stale = False
        _, job = await self._client.wait_events(self.id, self._after, 0)
        self.merge_update(job)
        return str(self._job["status"])

    async def apending_approval(self) -> dict[str, Any] | None:
        """The pending approval of this job, if any (looked up when not known yet)."""
        if (
            self._approval is not None
            and self._approval.get("status") == "pending"
            and not self._approval_stale
        ):
            return self._approval
        if self._job["status"] != "awaiting_approval":
            return None
        for approval in await self._client.approvals("pending"):
            if approval.get("job_id") == self.id:
                self._approval = approval
                return approval
        return None

    async def aapproval(self) -> dict[str, Any] | None:
        """This job's approval record in any state (who decided, why), looked up when unknown
        or stale; None when the job never needed one (or it is older than the listing)."""
        known = self._approval
        if (
            known is not None
            and not self._approval_stale
            and (known.get("status") != "pending" or self.status_is("awaiting_approval"))
        ):
            return known
        for approval in await self._client.approvals("all"):
            if approval.get("job_id") == self.id:
                self._approval = approval
                self._approval_stale = approval.get("status") == "pending" and not self.status_is(
                    "awaiting_approval"
                )
                return approval
        return None

    def status_is(self, status: str) -> bool:
        """The last known status (no request)."""
        return bool(self._job["status"] == status)

    # -- display -----------------------------------------------------------------------------
    def widget(self, *, show_answer: bool = True) -> JobWidget:
        """The live widget of this job (one per handle; every display shows a view of it)."""
        if self._widget is None:
            from llmgw_jupyter.kernel.widget import JobWidget

            self._widget = JobWidget(self, show_answer=show_answer)
        self.follow()
        return self._widget

    def mark_shown(self) -> None:
        """The magic displayed it already: the cell's result display must not repeat it."""
        self._shown_in = _execution_count()

    def show(self, *, show_answer: bool = True) -> None:
        """Display the live widget (a kernel) or one summary line (terminal IPython).

        The output also carries the job's own MIME type and a snapshot (Markdown and safe HTML)
        for frontends without the widget or after the kernel is gone; the snapshot is updated
        once the job ends, so a saved notebook holds the answer.
        """
        from IPython.display import display

        if in_kernel():
            bundle = self.mimebundle(show_answer=show_answer)
            shown = display(bundle, raw=True, display_id=True)
            if shown is not None:
                self._displays.append((shown, show_answer))
        else:
            if not self.done:
                with contextlib.suppress(GatewayCallError):
                    self.refresh()
            print(self.summary_line())

    def _ipython_display_(self) -> None:
        if self._shown_in is not None and self._shown_in == _execution_count():
            return
        self.show()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self.mimebundle(widget=in_kernel())

    def mimebundle(self, *, show_answer: bool = True, widget: bool = True) -> dict[str, Any]:
        """The widget view, the job's own MIME type, and a snapshot for everything else."""
        bundle: dict[str, Any] = {}
        if widget:
            bundle.update(self.widget(show_answer=show_answer)._repr_mimebundle_() or {})
        bundle[JOB_MIME] = {
            "version": JOB_MIME_VERSION,
            "job_id": self.id,
            "via": "server" if self._client.kind == "rest" else "embedded",
        }
        bundle["text/html"] = self.snapshot_html(show_answer=show_answer)
        bundle["text/markdown"] = self.snapshot_markdown(show_answer=show_answer)
        bundle["text/plain"] = self.summary_line()  # what text-only frontends show
        return bundle

    def _update_displays(self) -> None:
        """The job ended: its outputs' snapshots say so (the widget view stays the same).

        Sent again from the next cell when it went out from the follow task, so a notebook
        executed headless (nbclient, papermill) is saved with the final snapshot.
        """
        for shown, show_answer in self._displays:
            try:
                update_display(shown, self.mimebundle(show_answer=show_answer), raw=True)
            except Exception:  # a closed comm or a gone frontend must not stop the listeners
                log.exception("updating the output of job %s failed", self.id)
        self._displays.clear()

    def _snapshot(self, show_answer: bool) -> _Snapshot:
        """What both snapshots (Markdown and HTML) show, read once from the job."""
        job = self._job
        preview = job.get("prompt_preview")
        answer = job.get("final_message") if show_answer and self.done else None
        return _Snapshot(
            kind={"fork": "fork", "resume": "resume"}.get(str(job.get("kind")), "request"),
            state=describe_state(job, self._approval),
            duration=job_duration(job),
            preview=one_line(str(preview), 200) if preview else None,
            error=(job.get("error") or {}).get("message") or None,
            answer=answer or None,
        )

    def snapshot_markdown(self, *, show_answer: bool = True) -> str:
        """Markdown that renders as literal text (the answer is untrusted): state and answer."""
        snap = self._snapshot(show_answer)
        lines = [
            f"**{escape_markdown(provider_label(self._job.get('provider')))} {snap.kind}** "
            f"{escape_markdown(self.id)} · "
            f"**{escape_markdown(snap.state.text)}** · {escape_markdown(snap.duration)}"
        ]
        if snap.preview:
            lines.append(f"*{escape_markdown(snap.preview)}*")
        if snap.error:
            lines.append(escape_markdown(f"✖ {snap.error}"))
        if snap.answer:
            lines.append(escape_markdown(snap.answer, limit=SNAPSHOT_ANSWER_CHARS))
        lines.append(escape_markdown(self.current_result()._footer()))
        return "\n\n".join(line for line in lines if line) + "\n"

    def snapshot_html(self, *, show_answer: bool = True) -> str:
        """The same snapshot as safe HTML (``llmgw_jupyter.render``)."""
        snap = self._snapshot(show_answer)
        state = snap.state
        detail = f" {escape_text(state.detail)}" if state.detail else ""
        parts = [
            f"<p><b>{escape_text(provider_label(self._job.get('provider')))} {snap.kind}</b> "
            f"<code>{escape_text(self.id)}</code> "
            f"{state_badge_html(state)}{detail} · {escape_text(snap.duration)}</p>"
        ]
        if snap.preview:
            parts.append(f"<p><i>{escape_text(snap.preview)}</i></p>")
        if snap.error:
            parts.append(callout_html(text_to_html(f"✖ {snap.error}"), state.accent, "llmgw-error"))
        if snap.answer:
            parts.append(markdown_to_html(snap.answer, limit=SNAPSHOT_ANSWER_CHARS))
        footer = self.current_result()._footer(as_html=True)
        if footer:
            parts.append(f'<small class="llmgw-result-footer">{footer}</small>')
        body = "".join(parts)
        return f'<div class="llmgw-snapshot" data-job-id="{escape_text(self.id)}">{body}</div>'

    def summary_line(self) -> str:
        job = self._job
        state = describe_state(job, self._approval).text
        provider = str(job.get("provider") or "codex")
        parts = [f"{provider} job {self.id}", state, f"{self.elapsed:.1f} s"]
        if job.get("session_id"):
            parts.append(f"session {job['session_id']}")
        text = " · ".join(parts)
        if job.get("error") and job["error"].get("message"):
            text += f" · {job['error']['message']}"
        elif self.done and job.get("final_message"):
            text += f" · {one_line(job['final_message'], 80)}"
        else:
            text += f" · {one_line(job.get('prompt_preview') or '', 60)}"
        return text

    def __repr__(self) -> str:
        return f"<JobHandle {self.summary_line()}>"


def progress_line(handle: JobHandle, event: Mapping[str, Any]) -> str:
    """The compact terminal form of one event."""
    return f"[{handle.id}] {event.get('type')}: {one_line(str(event.get('summary') or ''), 100)}"


def _version(job: Mapping[str, Any]) -> tuple[str, int]:
    return (str(job.get("updated_at") or ""), int(job.get("last_seq") or 0))


def one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def in_kernel() -> bool:
    """True inside a Jupyter kernel (widgets render), False in terminal IPython or plain Python."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _execution_count() -> int | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else int(shell.execution_count)

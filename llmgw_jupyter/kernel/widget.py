"""The live job widget (ipywidgets 8).

Only ever touched on the kernel's main thread: the handle calls ``_on_change`` from its follow
task on the kernel's loop or from a blocking wait in a cell. Every change is a widget state
update (a comm message), never a write to some cell's output, so it is safe on ipykernel 7.
Each widget sub-part carries a ``llmgw-*`` DOM class, which is also how tests find it in the
comm traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from llmgw_jupyter.kernel.client import MAX_WAIT_SECONDS, GatewayCallError, GatewayClient
from llmgw_jupyter.kernel.presentation import (
    ACCENTS,
    TEXT_STYLE,
    approval_accent,
    approval_html,
    callout_html,
    describe_state,
    format_usage,
    provider_label,
    state_badge_html,
    timestamp,
)
from llmgw_jupyter.kernel.tasks import RETRY_DELAYS, keep, spawn
from llmgw_jupyter.render import escape_text, markdown_to_html, text_to_html

if TYPE_CHECKING:
    from llmgw_jupyter.kernel.handle import JobHandle

EVENTS_SHOWN = 8
RAW_LOG_BYTES = 256 * 1024
CLOCK_SECONDS = 1.0
APPROVAL_GRACE_SECONDS = 60.0  # a watcher of an undecided request stops this long after expiry
BUTTON_LAYOUT = {"width": "auto", "min_width": "7em"}
RAW_LOG_STYLE = (
    "max-height:24em;overflow:auto;font-size:85%;color:var(--jp-content-font-color1);"
    "background:var(--jp-layout-color2);padding:4px 8px"
)
TERMINAL_APPROVAL_OUTCOMES = frozenset({"denied", "approval_expired", "grant_revoked"})


def _classes(*names: str) -> dict[str, Any]:
    return {"_dom_classes": tuple(names)}


def make_button(
    description: str, dom_class: str, *, style: str = "", icon: str = "", tooltip: str = ""
) -> widgets.Button:
    """A button in JupyterLab's own style (``button_style`` follows the theme), one size."""
    return widgets.Button(
        description=description,
        button_style=style,
        icon=icon,
        tooltip=tooltip or description,
        layout=widgets.Layout(**BUTTON_LAYOUT),
        **_classes(dom_class),
    )


def approve_button() -> widgets.Button:
    """Approve: the same words and style everywhere (``success``, as the lab panel's)."""
    return make_button(
        "Approve", "llmgw-approve", style="success", icon="check", tooltip="Let this request run"
    )


def deny_button() -> widgets.Button:
    return make_button(
        "Deny", "llmgw-deny", style="danger", icon="times", tooltip="Refuse this request"
    )


def _show(widget: widgets.Widget, visible: bool) -> None:
    display = None if visible else "none"
    if widget.layout.display != display:
        widget.layout.display = display


class JobWidget(widgets.VBox):
    """State and clock, latest events, cancel, session and fork, approval, answer, raw log.

    Only the parts that make sense in the job's state are shown: approval buttons while it
    waits for one, Cancel while it may still run, the fork box once it has a session to fork.
    """

    def __init__(self, handle: JobHandle, *, show_answer: bool = True) -> None:
        self.handle = handle
        self.show_answer = show_answer
        self.header = widgets.HTML(**_classes("llmgw-header"))
        self.approval_text = widgets.HTML(**_classes("llmgw-approval-text"))
        self.approve_button = approve_button()
        self.deny_button = deny_button()
        self.approval_box = widgets.HBox(
            [self.approval_text, self.approve_button, self.deny_button],
            layout=widgets.Layout(display="none", align_items="center"),
            **_classes("llmgw-approval"),
        )
        self.events_view = widgets.HTML(**_classes("llmgw-events"))
        self.cancel_button = make_button(
            "Cancel", "llmgw-cancel", icon="stop", tooltip="Cancel this job"
        )
        self.session_label = widgets.HTML(**_classes("llmgw-session"))
        self.fork_prompt = widgets.Text(
            description="Fork with",  # the input's label (screen readers, axe)
            placeholder="a prompt for a fork of this session",
            style={"description_width": "initial"},
            **_classes("llmgw-fork-prompt"),
        )
        self.fork_button = make_button(
            "Fork",
            "llmgw-fork",
            icon="code-branch",
            tooltip="Run the prompt against a fork of this session",
        )
        self.fork_button.disabled = True
        self.controls = widgets.HBox(
            [self.cancel_button, self.session_label, self.fork_prompt, self.fork_button],
            layout=widgets.Layout(align_items="center"),
            **_classes("llmgw-controls"),
        )
        self.error_view = widgets.HTML(**_classes("llmgw-error"))
        # HTML widgets insert their value as markup: every value below is escaped or rendered by
        # llmgw_jupyter.render, because job text comes from agents and models.
        self.answer = widgets.HTML(**_classes("llmgw-answer"))
        self.usage_view = widgets.HTML(**_classes("llmgw-usage"))
        self.raw_log = widgets.HTML(**_classes("llmgw-raw-log"))
        self.raw = widgets.Accordion(
            children=[self.raw_log],
            titles=("Raw log",),
            selected_index=None,
            **_classes("llmgw-raw"),
        )
        self.raw.layout.display = "none"
        self.forks = widgets.VBox(**_classes("llmgw-forks"))
        super().__init__(
            [
                self.header,
                self.approval_box,
                self.events_view,
                self.controls,
                self.error_view,
                self.answer,
                self.usage_view,
                self.raw,
                self.forks,
            ],
            **_classes("llmgw-job"),
        )
        self._finished = False
        self._clock: asyncio.TimerHandle | None = None
        self._approval_lookup: asyncio.Task[Any] | None = None
        self._decided_lookup_done = False
        self._model: dict[str, Any] | None = None
        self.cancel_button.on_click(lambda _button: self._spawn(self._cancel()))
        self.fork_button.on_click(lambda _button: self._spawn(self._fork()))
        self.approve_button.on_click(lambda _button: self._spawn(self._decide(True)))
        self.deny_button.on_click(lambda _button: self._spawn(self._decide(False)))
        handle.add_listener(self._on_change)
        self._on_change(handle, [])
        self._spawn(self._lookup_model())

    # -- rendering -------------------------------------------------------------------------
    def _on_change(self, handle: JobHandle, new_events: list[dict[str, Any]]) -> None:
        """Every part, the header last: whoever sees the new state there sees all of it."""
        job = handle.job
        shown_events = [e for e in handle.events_so_far() if e.get("type") != "job.status"]
        # "no progress yet" only while it runs: a job that never started has no progress to wait for
        wanted = bool(shown_events) or (job.get("started_at") is not None and not handle.done)
        _show(self.events_view, wanted)
        if not wanted:
            self.events_view.value = ""
        elif new_events or not self.events_view.value:
            self.events_view.value = _events_html(shown_events)
        session = job.get("session_id")
        if session:
            text = f"session <code>{escape_text(session)}</code>"
            if job.get("parent_session_id"):
                text += f" (fork of <code>{escape_text(job['parent_session_id'])}</code>)"
            self.session_label.value = text
        self._render_approval()
        self._render_controls()
        message = (job.get("error") or {}).get("message") or handle.lost
        if message:
            self._show_error(str(message))
        self._render_usage()
        if handle.done:
            self.cancel_button.disabled = True
            if not self._finished:
                self._finished = True
                self._render_final()
        self._render_header()
        self._schedule_clock()

    def _render_usage(self) -> None:
        """Tokens and cost as soon as the job reports them (Claude does while it runs), and
        their final figures at the end."""
        usage = format_usage(self.handle.job.get("usage"))
        value = escape_text(usage)
        if self.usage_view.value != value:
            self.usage_view.value = value
        _show(self.usage_view, bool(usage))

    def _render_controls(self) -> None:
        """Cancel while the job may still run; the fork box once there is a session to fork."""
        job = self.handle.job
        status = str(job["status"])
        session = job.get("session_id")
        can_cancel = status in ("queued", "running")
        can_fork = session is not None and status in ("running", "succeeded")
        _show(self.cancel_button, can_cancel)
        _show(self.session_label, session is not None)
        _show(self.fork_prompt, can_fork)
        _show(self.fork_button, can_fork)
        self.fork_button.disabled = not can_fork
        _show(self.controls, can_cancel or session is not None)

    def _render_header(self) -> None:
        job = self.handle.job
        state = describe_state(job, self.handle.approval)
        preview = escape_text(job.get("prompt_preview") or "")
        kind = {"fork": "fork", "resume": "resume"}.get(str(job.get("kind")), "request")
        detail = (
            f' <span class="llmgw-state-detail">{escape_text(state.detail)}</span>'
            if state.detail
            else ""
        )
        never_started = self.handle.done and job.get("started_at") is None
        clock = (
            ""
            if never_started
            else f' <span class="llmgw-clock">{self.handle.elapsed:.1f} s</span>'
        )
        provider = str(job.get("provider") or "codex")
        model = ""
        # The summary's model is Codex's: the echo badge belongs on Codex jobs only.
        if provider == "codex" and self._model is not None and self._model.get("local_echo"):
            model = (
                f' · <span class="llmgw-model" data-local-echo="true" '
                f'title="jobs use the bundled echo model, not a real one">'
                f"{escape_text(self._model['label'])}</span>"
            )
        self.header.value = (
            f'<div style="{TEXT_STYLE}">'
            f'<b class="llmgw-provider" data-provider="{escape_text(provider)}">'
            f"{escape_text(provider_label(provider))} {kind}</b> "
            f"<code>{escape_text(self.handle.id)}</code> "
            f"{state_badge_html(state)}{detail}{clock}{model}"
            f"<br><i>{preview}</i></div>"
        )

    def _render_approval(self) -> None:
        handle = self.handle
        waiting = handle.job["status"] == "awaiting_approval"
        approval = handle.approval
        if waiting:
            _show(self.approve_button, True)
            _show(self.deny_button, True)
            _show(self.approval_box, True)
            if approval is not None and approval.get("status") == "pending":
                text = approval_html(approval)
            else:
                text = "<b>⚠ waits for your approval</b>"
                if self._approval_lookup is None:
                    self._approval_lookup = self._spawn(self._lookup_approval())
            self.approval_text.value = callout_html(
                text, ACCENTS["awaiting_approval"], "llmgw-approval-callout"
            )
            return
        _show(self.approve_button, False)
        _show(self.deny_button, False)
        state = describe_state(handle.job, approval)
        wants_record = handle.approval_stale or (
            approval is None and state.outcome in TERMINAL_APPROVAL_OUTCOMES
        )
        if wants_record and not self._decided_lookup_done and self._approval_lookup is None:
            self._decided_lookup_done = True
            self._approval_lookup = self._spawn(self._lookup_decided())
        decided = approval is not None and approval.get("status") != "pending"
        _show(self.approval_box, decided and not handle.approval_stale)
        if decided and approval is not None:
            self.approval_text.value = callout_html(
                approval_html(approval), approval_accent(approval), "llmgw-approval-callout"
            )

    def _render_final(self) -> None:
        job = self.handle.job
        if self.show_answer and job.get("final_message"):
            self.answer.value = markdown_to_html(str(job["final_message"]))
        if job.get("started_at") is not None:
            self.raw.layout.display = "block"
            self._spawn(self._load_raw_log())

    def _show_error(self, message: str) -> None:
        self.error_view.value = callout_html(
            f"✖ {text_to_html(message)}", ACCENTS["failed"], "llmgw-error-callout"
        )

    # -- the elapsed clock: a display timer, the job state itself is pushed ------------------
    def _schedule_clock(self) -> None:
        if self.handle.done:
            if self._clock is not None:
                self._clock.cancel()
                self._clock = None
            return
        if self._clock is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._clock = loop.call_later(CLOCK_SECONDS, self._tick)

    def _tick(self) -> None:
        self._clock = None
        if not self.handle.done:
            self._render_header()
            self._schedule_clock()

    # -- actions -----------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """Run an action on the kernel's loop; its failure shows in the widget."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            return None

        async def guarded() -> Any:
            try:
                return await coro
            except GatewayCallError as error:
                self._show_error(f"{error.category}: {error.message}")
            except Exception as error:  # an action must not die silently
                self._show_error(f"{type(error).__name__}: {error}")
            return None

        return keep(loop.create_task(guarded()))

    async def _cancel(self) -> None:
        self.cancel_button.disabled = True
        await self.handle.acancel()

    async def _fork(self) -> None:
        prompt = self.fork_prompt.value.strip()
        if not prompt:
            self._show_error("write a prompt for the fork first")
            return
        self.fork_button.disabled = True
        try:
            child = await self.handle.afork(prompt)
        finally:
            self.fork_button.disabled = self.handle.job.get("session_id") is None
        self.fork_prompt.value = ""
        self.forks.children = (*self.forks.children, child.widget())

    async def _decide(self, approve: bool) -> None:
        self.approve_button.disabled = self.deny_button.disabled = True
        try:
            await self.handle.adecide(approve)
        finally:
            self.approve_button.disabled = self.deny_button.disabled = False

    async def _lookup_approval(self) -> None:
        try:
            await self.handle.apending_approval()
        finally:
            self._approval_lookup = None
        self._render_approval()

    async def _lookup_decided(self) -> None:
        """Who decided (and why) for a request that left ``awaiting_approval``."""
        try:
            await self.handle.aapproval()
        finally:
            self._approval_lookup = None
        self._render_header()
        self._render_approval()

    async def _lookup_model(self) -> None:
        """Say so when jobs use the local echo model (the gateway's summary knows)."""
        self._model = await self.handle.client.model_info()
        if self._model is not None:
            self._render_header()

    async def _load_raw_log(self) -> None:
        client = self.handle.client
        page = await client.job_result(self.handle.id, limit=RAW_LOG_BYTES)
        output = page.get("output") or {}
        text = str(output.get("data") or "")
        if not output.get("eof", True):
            text += f"\n… ({output.get('size')} bytes in all; page on with %llm_result --raw)"
        self.raw_log.value = (
            f'<pre style="{RAW_LOG_STYLE}">{escape_text(text) or "(no output)"}</pre>'
        )

    def close(self) -> None:
        self.handle.remove_listener(self._on_change)
        if self._clock is not None:
            self._clock.cancel()
        with contextlib.suppress(Exception):
            super().close()


def _events_html(events: list[dict[str, Any]]) -> str:
    """The latest progress events (status changes left out by the caller), oldest first, each
    with its sequence number for tests and tools."""
    shown = events[-EVENTS_SHOWN:]
    if not shown:
        return f'<div class="llmgw-event-empty" style="{TEXT_STYLE}"><i>no progress yet</i></div>'
    lines = []
    for event in shown:
        lines.append(
            f'<div class="llmgw-event" data-seq="{int(event["seq"])}" style="{TEXT_STYLE}">'
            f"<code>{escape_text(event.get('type'))}</code> "
            f"{escape_text(event.get('summary') or '')}</div>"
        )
    return "".join(lines)


class ApprovalsWidget(widgets.VBox):
    """``%llm_approvals``: one row per request, live: a decision made anywhere (the lab panel,
    REST, another kernel) or an expiry replaces the row's buttons with what happened."""

    def __init__(self, client: GatewayClient, approvals: list[dict[str, Any]]) -> None:
        self.client = client
        self.rows = [ApprovalRow(client, approval) for approval in approvals]
        children: list[widgets.Widget] = list(self.rows)
        if not children:
            children.append(
                widgets.HTML(
                    f'<i style="{TEXT_STYLE}">no pending approvals</i>', **_classes("llmgw-none")
                )
            )
        super().__init__(children, **_classes("llmgw-approvals"))
        for row in self.rows:
            row.watch()

    def close(self) -> None:
        for row in self.rows:
            row.stop()
        with contextlib.suppress(Exception):
            super().close()


class ApprovalRow(widgets.HBox):
    """One approval request: its words, Approve and Deny while it is pending."""

    def __init__(self, client: GatewayClient, approval: dict[str, Any]) -> None:
        self.client = client
        self.approval = dict(approval)
        self.text = widgets.HTML(**_classes("llmgw-approval-row"))
        self.approve = approve_button()
        self.deny = deny_button()
        super().__init__(
            [self.text, self.approve, self.deny],
            layout=widgets.Layout(align_items="center"),
            **_classes("llmgw-approval-item"),
        )
        self._watcher: asyncio.Task[Any] | None = None
        self._note = ""
        self.approve.on_click(lambda _b: spawn(self._decide(True)))
        self.deny.on_click(lambda _b: spawn(self._decide(False)))
        self.render()

    @property
    def pending(self) -> bool:
        return self.approval.get("status") == "pending"

    def render(self) -> None:
        """Buttons first, then the words: who sees the decision sees the buttons gone."""
        _show(self.approve, self.pending)
        _show(self.deny, self.pending)
        note = f" <span>{escape_text(self._note)}</span>" if self._note else ""
        self.text.value = callout_html(
            approval_html(self.approval) + note,
            approval_accent(self.approval),
            "llmgw-approval-callout",
        )

    def update(self, record: dict[str, Any]) -> None:
        self.approval = dict(record)
        self._note = ""
        self.render()

    async def _decide(self, approve: bool) -> None:
        self.approve.disabled = self.deny.disabled = True
        try:
            record = await self.client.decide_approval(str(self.approval["id"]), approve)
        except GatewayCallError as error:
            self._note = error.message
            await self._refresh()
            return
        finally:
            self.approve.disabled = self.deny.disabled = False
        self.update(record)

    async def _refresh(self) -> None:
        """The record as the gateway has it now (decided elsewhere, expired)."""
        for record in await self.client.approvals("all"):
            if record.get("id") == self.approval.get("id"):
                note = self._note
                self.update(record)
                self._note = note if record.get("status") == "pending" else ""
                self.render()
                return

    # -- following the decision ---------------------------------------------------------------
    def watch(self) -> None:
        """Follow the request until it is decided or expires (never longer)."""
        if self.pending and self._watcher is None:
            self._watcher = spawn(self._watch())

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    async def _watch(self) -> None:
        """Wake on the request's job (the gateway's long-poll): a decision or an expiry moves
        it out of ``awaiting_approval``. A request without a job is looked at again every
        ``MAX_WAIT_SECONDS`` until its expiry. Either way the watch ends by the expiry (plus a
        grace period) at the latest; the relative expiry is refreshed on each wake-up."""
        job_id = self.approval.get("job_id")
        expires = timestamp(self.approval.get("expires_at"))
        deadline = (expires or time.time()) + APPROVAL_GRACE_SECONDS
        after = 0
        failures = 0
        try:
            while self.pending and time.time() < deadline:
                wait = min(MAX_WAIT_SECONDS, max(0.0, deadline - time.time()))
                try:
                    if job_id:
                        _, job = await self.client.wait_events(str(job_id), after, wait)
                        after = int(job.get("last_seq") or 0)
                        if job.get("status") != "awaiting_approval":
                            break
                    else:
                        await asyncio.sleep(wait)  # bounded by the expiry, see above
                        await self._refresh()
                        continue
                except GatewayCallError as error:
                    if failures >= len(RETRY_DELAYS):
                        self._note = f"stopped following: {error.message}"
                        self.render()
                        return
                    await asyncio.sleep(RETRY_DELAYS[failures])
                    failures += 1
                    continue
                failures = 0
                self.render()  # "expires in 8 min"
            await self._refresh()
        finally:
            self._watcher = None

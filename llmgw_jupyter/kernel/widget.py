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
import html
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from llmgw_jupyter.kernel.client import GatewayCallError, GatewayClient
from llmgw_jupyter.kernel.handle import _TASKS, format_usage
from llmgw_jupyter.render import markdown_to_html

if TYPE_CHECKING:
    from llmgw_jupyter.kernel.handle import JobHandle

EVENTS_SHOWN = 8
RAW_LOG_BYTES = 256 * 1024
CLOCK_SECONDS = 1.0
_STATUS_COLOURS = {
    "awaiting_approval": "#b26a00",
    "queued": "#666",
    "running": "#1565c0",
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#6d4c41",
    "timed_out": "#c62828",
    "interrupted": "#6d4c41",
}


def _classes(*names: str) -> dict[str, Any]:
    return {"_dom_classes": tuple(names)}


class JobWidget(widgets.VBox):
    """State and clock, latest events, cancel, session and fork, approval, answer, raw log."""

    def __init__(self, handle: JobHandle, *, show_answer: bool = True) -> None:
        self.handle = handle
        self.show_answer = show_answer
        self.header = widgets.HTML(**_classes("llmgw-header"))
        self.approval_text = widgets.HTML(**_classes("llmgw-approval-text"))
        self.approve_button = widgets.Button(
            description="Approve", button_style="success", icon="check", **_classes("llmgw-approve")
        )
        self.deny_button = widgets.Button(
            description="Deny", button_style="danger", icon="times", **_classes("llmgw-deny")
        )
        self.approval_box = widgets.HBox(
            [self.approval_text, self.approve_button, self.deny_button],
            layout=widgets.Layout(display="none"),
            **_classes("llmgw-approval"),
        )
        self.events_view = widgets.HTML(**_classes("llmgw-events"))
        self.cancel_button = widgets.Button(
            description="Cancel", icon="stop", tooltip="Cancel this job", **_classes("llmgw-cancel")
        )
        self.session_label = widgets.HTML(**_classes("llmgw-session"))
        self.fork_prompt = widgets.Text(
            placeholder="prompt for a fork of this session", **_classes("llmgw-fork-prompt")
        )
        self.fork_button = widgets.Button(
            description="Fork",
            icon="code-branch",
            tooltip="Run the prompt against a fork of this session",
            disabled=True,
            **_classes("llmgw-fork"),
        )
        self.controls = widgets.HBox(
            [self.cancel_button, self.session_label, self.fork_prompt, self.fork_button],
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
        self.cancel_button.on_click(lambda _button: self._spawn(self._cancel()))
        self.fork_button.on_click(lambda _button: self._spawn(self._fork()))
        self.approve_button.on_click(lambda _button: self._spawn(self._decide(True)))
        self.deny_button.on_click(lambda _button: self._spawn(self._decide(False)))
        handle.add_listener(self._on_change)
        self._on_change(handle, [])

    # -- rendering -------------------------------------------------------------------------
    def _on_change(self, handle: JobHandle, new_events: list[dict[str, Any]]) -> None:
        job = handle.job
        self._render_header()
        if new_events or not self.events_view.value:
            self.events_view.value = _events_html(handle.events_so_far())
        session = job.get("session_id")
        if session:
            text = f"session <code>{html.escape(session)}</code>"
            if job.get("parent_session_id"):
                text += f" (fork of <code>{html.escape(job['parent_session_id'])}</code>)"
            self.session_label.value = text
        self.fork_button.disabled = session is None
        self._render_approval()
        message = (job.get("error") or {}).get("message") or handle.lost
        if message:
            self._show_error(str(message))
        if handle.done:
            self.cancel_button.disabled = True
            self.cancel_button.layout.display = "none"
            if not self._finished:
                self._finished = True
                self._render_final()
        self._schedule_clock()

    def _render_header(self) -> None:
        job = self.handle.job
        status = str(job["status"])
        colour = _STATUS_COLOURS.get(status, "#333")
        preview = html.escape(str(job.get("prompt_preview") or ""))
        label = html.escape(status.replace("_", " "))
        kind = {"fork": "fork", "resume": "resume"}.get(str(job.get("kind")), "request")
        self.header.value = (
            f"<b>Codex {kind}</b> <code>{html.escape(self.handle.id)}</code> "
            f'<span class="llmgw-state" data-status="{html.escape(status)}" '
            f'style="color:{colour};font-weight:bold">{label}</span> '
            f'<span class="llmgw-clock">{self.handle.elapsed:.1f} s</span>'
            f"<br><i>{preview}</i>"
        )

    def _render_approval(self) -> None:
        waiting = self.handle.job["status"] == "awaiting_approval"
        self.approval_box.layout.display = "flex" if waiting else "none"
        if not waiting:
            return
        approval = self.handle.approval
        if approval is not None and approval.get("status") == "pending":
            self.approval_text.value = (
                f"⚠ waits for your approval (<code>{html.escape(str(approval['id']))}</code>, "
                f"requested by {html.escape(str(approval.get('caller')))}, "
                f"expires {html.escape(str(approval.get('expires_at')))})"
            )
        else:
            self.approval_text.value = "⚠ waits for your approval"
            if self._approval_lookup is None:
                self._approval_lookup = self._spawn(self._lookup_approval())

    def _render_final(self) -> None:
        job = self.handle.job
        if self.show_answer and job.get("final_message"):
            self.answer.value = markdown_to_html(str(job["final_message"]))
        self.usage_view.value = html.escape(format_usage(job.get("usage")))
        self.raw.layout.display = "block"
        self._spawn(self._load_raw_log())

    def _show_error(self, message: str) -> None:
        self.error_view.value = f'<span style="color:#c62828">✖ {html.escape(message)}</span>'

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

        task = loop.create_task(guarded())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
        return task

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

    async def _load_raw_log(self) -> None:
        client = self.handle.client
        page = await client.job_result(self.handle.id, limit=RAW_LOG_BYTES)
        output = page.get("output") or {}
        text = str(output.get("data") or "")
        if not output.get("eof", True):
            text += f"\n… ({output.get('size')} bytes in all; page on with %llm_result --raw)"
        self.raw_log.value = (
            '<pre style="max-height:24em;overflow:auto;font-size:85%">'
            f"{html.escape(text) or '(no output)'}</pre>"
        )

    def close(self) -> None:
        self.handle.remove_listener(self._on_change)
        if self._clock is not None:
            self._clock.cancel()
        with contextlib.suppress(Exception):
            super().close()


def _events_html(events: list[dict[str, Any]]) -> str:
    """The latest events, oldest first, each with its sequence number for tests and tools."""
    shown = [event for event in events if event.get("type") != "job.status"][-EVENTS_SHOWN:]
    if not shown:
        return '<div class="llmgw-event-empty"><i>no progress yet</i></div>'
    lines = []
    for event in shown:
        lines.append(
            f'<div class="llmgw-event" data-seq="{int(event["seq"])}">'
            f"<code>{html.escape(str(event.get('type')))}</code> "
            f"{html.escape(str(event.get('summary') or ''))}</div>"
        )
    return "".join(lines)


class ApprovalsWidget(widgets.VBox):
    """``%llm_approvals``: one row per request with approve and deny buttons."""

    def __init__(self, client: GatewayClient, approvals: list[dict[str, Any]]) -> None:
        self.client = client
        rows: list[widgets.Widget] = []
        for approval in approvals:
            rows.append(self._row(approval))
        if not rows:
            rows.append(widgets.HTML("<i>no pending approvals</i>", **_classes("llmgw-none")))
        super().__init__(rows, **_classes("llmgw-approvals"))

    def _row(self, approval: dict[str, Any]) -> widgets.Widget:
        text = widgets.HTML(_approval_html(approval), **_classes("llmgw-approval-row"))
        approve = widgets.Button(
            description="Approve", button_style="success", **_classes("llmgw-approve")
        )
        deny = widgets.Button(description="Deny", button_style="danger", **_classes("llmgw-deny"))
        pending = approval.get("status") == "pending"
        approve.disabled = deny.disabled = not pending

        async def decide(yes: bool) -> None:
            approve.disabled = deny.disabled = True
            try:
                record = await self.client.decide_approval(str(approval["id"]), yes)
            except GatewayCallError as error:
                text.value = _approval_html(approval) + (
                    f' <span style="color:#c62828">{html.escape(error.message)}</span>'
                )
                return
            text.value = _approval_html(record)

        approve.on_click(lambda _b: _spawn_task(decide(True)))
        deny.on_click(lambda _b: _spawn_task(decide(False)))
        return widgets.HBox([text, approve, deny], **_classes("llmgw-approval-item"))


def _approval_html(approval: dict[str, Any]) -> str:
    prompt = str((approval.get("arguments") or {}).get("prompt") or "")
    short = prompt if len(prompt) <= 80 else prompt[:79] + "…"
    return (
        f"<code>{html.escape(str(approval['id']))}</code> "
        f'<b data-status="{html.escape(str(approval["status"]))}">'
        f"{html.escape(str(approval['status']))}</b> "
        f"{html.escape(str(approval.get('caller')))} → {html.escape(str(approval.get('tool')))} "
        f"(job <code>{html.escape(str(approval.get('job_id')))}</code>, expires "
        f"{html.escape(str(approval.get('expires_at')))}) <i>{html.escape(short)}</i>"
    )


def _spawn_task(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        coro.close()
        return
    task = loop.create_task(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)

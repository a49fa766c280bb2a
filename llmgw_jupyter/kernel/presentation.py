"""How jobs and approvals read in the notebook: state names, times and theme-aware styles.

Framework-free (no IPython, no ipywidgets), shared by the widget, the magics' tables and the
Markdown snapshots, so every view says the same words. Colours are JupyterLab's CSS variables
(``--jp-*``) only: text always uses the theme's font colours on the theme's layout colours, and
a state's colour is an accent (a border), so light, dark and high-contrast themes stay legible.
Every untrusted value that reaches HTML here goes through ``llmgw_jupyter.render``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llmgw_jupyter.render import escape_text

# The accent colour of each state (a border next to neutral text).
ACCENTS = {
    "awaiting_approval": "var(--jp-warn-color1)",
    "queued": "var(--jp-border-color1)",
    "running": "var(--jp-brand-color1)",
    "succeeded": "var(--jp-success-color1)",
    "failed": "var(--jp-error-color1)",
    "timed_out": "var(--jp-error-color1)",
    "cancelled": "var(--jp-ui-font-color2)",
    "interrupted": "var(--jp-ui-font-color2)",
    "denied": "var(--jp-error-color1)",
    "approval_expired": "var(--jp-warn-color1)",
    "grant_revoked": "var(--jp-error-color1)",
}
TEXT_STYLE = "color:var(--jp-ui-font-color1)"
BADGE_STYLE = (
    "display:inline-block;padding:0 6px;border-radius:2px;font-weight:bold;"
    "color:var(--jp-ui-font-color0);background:var(--jp-layout-color2);"
    "border:1px solid {accent};border-left-width:4px"
)
CALLOUT_STYLE = (
    "padding:4px 8px;border-radius:2px;color:var(--jp-ui-font-color1);"
    "background:var(--jp-layout-color2);border-left:4px solid {accent}"
)


@dataclass(frozen=True)
class JobState:
    """What happened to a job, in words: ``label`` (short) and ``detail`` (who, why)."""

    status: str
    outcome: str  # status, or denied / approval_expired / grant_revoked
    label: str
    detail: str = ""

    @property
    def accent(self) -> str:
        return ACCENTS.get(self.outcome, ACCENTS.get(self.status, "var(--jp-border-color1)"))

    @property
    def text(self) -> str:
        return f"{self.label} ({self.detail})" if self.detail else self.label


def describe_state(job: Mapping[str, Any], approval: Mapping[str, Any] | None = None) -> JobState:
    """The state as people say it: a request the owner denied is "denied", not "cancelled".

    ``approval`` is the job's approval record when known (who decided, and why).
    """
    status = str(job.get("status"))
    reason = str(job.get("cancel_reason") or "")
    decided = approval if approval is not None and approval.get("job_id") == job.get("id") else None
    if status == "cancelled" and reason == "approval_denied":
        return JobState(status, "denied", "denied", decision_detail(decided))
    if status == "cancelled" and reason == "approval_expired":
        return JobState(status, "approval_expired", "approval expired")
    if status == "cancelled" and reason == "grant_revoked":
        return JobState(status, "grant_revoked", "cancelled", "grant revoked")
    if status == "cancelled":
        if reason.startswith("cancelled by "):
            return JobState(
                status, status, "cancelled", "by " + reason.removeprefix("cancelled by ")
            )
        return JobState(status, status, "cancelled", "" if reason == "cancelled" else reason)
    detail = ""
    if status in ("queued", "running") and decided and decided.get("status") == "approved":
        detail = decision_text(decided)
    return JobState(status, status, status.replace("_", " "), detail)


def decision_detail(approval: Mapping[str, Any] | None) -> str:
    """``by owner: too risky`` from a decided approval; empty when unknown."""
    if not approval:
        return ""
    text = f"by {approval['decided_by']}" if approval.get("decided_by") else ""
    if approval.get("reason"):
        text = f"{text}: {approval['reason']}" if text else str(approval["reason"])
    return text


def decision_text(approval: Mapping[str, Any]) -> str:
    """One approval's state in the words every view uses: ``approved by owner``..."""
    status = str(approval.get("status"))
    if status == "pending":
        return "waits for your approval"
    if status == "expired":
        return "approval expired"
    detail = decision_detail(approval)
    if not detail:
        return status
    return f"{status} {detail}" if approval.get("decided_by") else f"{status}: {detail}"


# -- times ------------------------------------------------------------------------------------
def timestamp(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value).timestamp()


def span(seconds: float) -> str:
    """A duration as people say it: ``45 s``, ``9 min``, ``2 h``, ``3 d`` (rounded down)."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{math.floor(seconds / size)} {unit}"
    return f"{math.floor(seconds)} s"


def local_time(moment: float) -> str:
    """The exact local time, to the second, with its zone: ``2025-06-01 14:05:31 CEST``."""
    return datetime.fromtimestamp(moment).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def relative(moment: float, now: float | None = None) -> str:
    """``in 9 min`` or ``9 min ago``."""
    delta = moment - (time.time() if now is None else now)
    return f"in {span(delta)}" if delta >= 0 else f"{span(-delta)} ago"


def expiry_text(expires_at: str | None, now: float | None = None) -> str:
    """``expires in 9 min`` / ``expired 2 min ago``; the exact time goes to the tooltip."""
    moment = timestamp(expires_at)
    if moment is None:
        return "no expiry"
    when = relative(moment, now)
    return f"expires {when}" if when.startswith("in ") else f"expired {when}"


def expiry_html(expires_at: str | None, now: float | None = None) -> str:
    """The expiry with the exact local time in a tooltip."""
    moment = timestamp(expires_at)
    if moment is None:
        return "no expiry"
    return (
        f'<span class="llmgw-expiry" title="{escape_text(local_time(moment))}">'
        f"{escape_text(expiry_text(expires_at, now))}</span>"
    )


def job_age(job: Mapping[str, Any], now: float | None = None) -> str:
    """Time since the job was created (what the jobs table and the panel's time column show)."""
    created = timestamp(job.get("created_at"))
    return "" if created is None else span((time.time() if now is None else now) - created)


def job_duration(job: Mapping[str, Any], now: float | None = None) -> str:
    """How long it ran (the tooltip of the age): ``ran 3 s``, ``running for 1 min``..."""
    now = time.time() if now is None else now
    started = timestamp(job.get("started_at"))
    finished = timestamp(job.get("finished_at"))
    created = timestamp(job.get("created_at"))
    if started is None:
        if finished is not None:
            return "never started"
        waited = span(now - created) if created is not None else ""
        return f"not started yet (waiting {waited})" if waited else "not started yet"
    if finished is None:
        return f"running for {span(now - started)}"
    seconds = finished - started
    return f"ran {seconds:.1f} s" if seconds < 60 else f"ran {span(seconds)}"


# -- HTML pieces ------------------------------------------------------------------------------
def state_badge_html(state: JobState) -> str:
    """The state label; ``data-status`` is the job's status, ``data-outcome`` what happened."""
    return (
        f'<span class="llmgw-state" data-status="{escape_text(state.status)}" '
        f'data-outcome="{escape_text(state.outcome)}" '
        f'style="{BADGE_STYLE.format(accent=state.accent)}">{escape_text(state.label)}</span>'
    )


def callout_html(inner_html: str, accent: str, css_class: str) -> str:
    """A banner (approval, error, denial): neutral text on the theme's layout colour."""
    return (
        f'<div class="{escape_text(css_class)}" style="{CALLOUT_STYLE.format(accent=accent)}">'
        f"{inner_html}</div>"
    )


def approval_html(approval: Mapping[str, Any], now: float | None = None) -> str:
    """One approval request, the same words in the job widget and ``%llm_approvals``."""
    status = str(approval.get("status"))
    prompt = str((approval.get("arguments") or {}).get("prompt") or "")
    short = " ".join(prompt.split())
    short = short if len(short) <= 80 else short[:79] + "…"
    parts = [
        f'<b class="llmgw-decision" data-status="{escape_text(status)}">'
        f"{'⚠ ' if status == 'pending' else ''}{escape_text(decision_text(approval))}</b>",
        f"requested by {escape_text(approval.get('caller'))}",
        f"{escape_text(approval.get('tool'))}"
        + (
            f" (job <code>{escape_text(approval['job_id'])}</code>)"
            if approval.get("job_id")
            else ""
        ),
    ]
    if status == "pending":
        parts.append(expiry_html(approval.get("expires_at"), now))
    parts.append(f"approval <code>{escape_text(approval.get('id'))}</code>")
    text = " · ".join(parts)
    if short:
        text += f"<br><i>{escape_text(short)}</i>"
    return text


def approval_accent(approval: Mapping[str, Any]) -> str:
    return {
        "pending": ACCENTS["awaiting_approval"],
        "approved": ACCENTS["succeeded"],
        "denied": ACCENTS["denied"],
    }.get(str(approval.get("status")), ACCENTS["cancelled"])


def format_usage(usage: Mapping[str, Any] | None) -> str:
    """``tokens: 1,234 in (1,000 cached) · 56 out (12 reasoning) · $0.0123``; empty when unknown."""
    if not usage or usage.get("input_tokens") is None:
        return ""
    text = f"tokens: {usage['input_tokens']:,} in"
    if usage.get("cached_input_tokens"):
        text += f" ({usage['cached_input_tokens']:,} cached)"
    text += f" · {usage.get('output_tokens') or 0:,} out"
    if usage.get("reasoning_output_tokens"):
        text += f" ({usage['reasoning_output_tokens']:,} reasoning)"
    if usage.get("cost_usd") is not None:
        text += f" · ${usage['cost_usd']:.4f}"
    return text


# Display names of the providers this version knows; another shows under its registered name.
PROVIDER_LABELS = {"codex": "Codex", "claude": "Claude"}


def provider_label(provider: object) -> str:
    """``Codex``, ``Claude``, or the provider's registered name (``fake``)."""
    name = str(provider or "codex")
    return PROVIDER_LABELS.get(name, name)

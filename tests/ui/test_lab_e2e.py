"""The JupyterLab extension in a real headless Chromium against a real ``jupyter lab``.

An external agent submits Codex jobs over MCP (the official MCP Python client, a grant token whose
policy requires approval); the owner watches the status bar, opens the jobs panel, approves by
clicking, sees the answer, and cancels a slow job by clicking. Assertions are on the DOM; the
screenshots in ``test-output/ui/`` are for people.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client.session import ClientSession
from playwright.async_api import Locator, Page, expect

from llmgw_jupyter.testing.jupyter_process import JupyterProcess
from llmgw_jupyter.testing.mcp_agent import agent_session

LAB_LOAD = 90_000  # ms: the first page load compiles nothing, but the machine is shared
JOB_DONE = 60_000  # ms: a Codex run against the mock model takes a few seconds
UI = 15_000  # ms: a DOM change after a server-side change (event stream, or polling fallback)

REVIEW_POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {
        "codex_request_async": {"action": "require_approval", "approval": {"timeout": "10m"}},
        "llm_job_status": {"action": "allow"},
        "llm_job_cancel": {"action": "allow"},
    },
}

pytestmark = pytest.mark.timeout(300)


def mcp_agent(url: str, token: str) -> Any:
    """An external agent: the official MCP client over streamable HTTP with a grant token."""
    return agent_session(url, token, 30.0)


async def call(session: ClientSession, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    assert result.is_error is False, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


def status_bar(page: Page) -> Locator:
    return page.locator(".llmgw-statusbar")


def job_row(page: Page, job_id: str) -> Locator:
    return page.locator(f'.llmgw-job[data-job-id="{job_id}"]')


async def lab_is_up(page: Page) -> None:
    """JupyterLab has loaded and the extension has its first summary: nothing is going on."""
    await expect(status_bar(page)).to_have_attribute("data-state", "idle", timeout=LAB_LOAD)
    await expect(page.locator(".llmgw-statusbar-text")).to_have_text("Agents: idle")


async def open_panel_from_status_bar(page: Page) -> Locator:
    panel = page.locator("#llmgw-panel.llmgw-panel")
    await page.locator(".llmgw-statusbar-text").click()
    await expect(panel).to_be_visible(timeout=UI)
    await expect(panel.locator(".llmgw-connection")).to_have_attribute(
        "data-state", "streaming", timeout=UI
    )
    return panel


async def test_an_agents_job_waits_for_approval_in_the_panel_and_its_answer_appears(
    page: Page, lab: JupyterProcess, rest: httpx.AsyncClient, output_dir: Path
) -> None:
    await lab_is_up(page)
    created = await rest.post("grants", json={"name": "review-bot", "policy": REVIEW_POLICY})
    assert created.status_code == 201, created.text
    grant_token = created.json()["token"]
    prompt = "Summarise the notebook in one sentence, please"

    async with mcp_agent(lab.mcp_url, grant_token) as agent:
        submitted = await call(agent, "codex_request_async", {"prompt": prompt})
        job_id = submitted["job"]["id"]
        approval_id = submitted["approval"]["id"]
        assert submitted["job"]["status"] == "awaiting_approval"
        assert submitted["job"]["caller"] == "grant:review-bot"

        # The status bar counts the request live, and a notification asks for a review while the
        # panel is closed.
        text = page.locator(".llmgw-statusbar-text")
        await expect(text).to_have_text("Agents: 1 needs approval", timeout=UI)
        await expect(status_bar(page)).to_have_attribute("data-state", "active")
        toast = page.locator(".Toastify__toast", has_text="approval needed")
        await expect(toast).to_have_count(1, timeout=UI)
        await expect(toast).to_contain_text("review-bot")
        await expect(toast).to_contain_text("codex_request_async")
        await expect(toast.get_by_role("button", name="Review")).to_be_visible()
        await expect(page.locator(".Toastify__toast")).to_have_count(1)  # and no other
        await page.locator("#jp-main-statusbar").screenshot(
            path=output_dir / "statusbar-needs-approval.png"
        )

        # Clicking the status bar opens the panel: the pending approval shows who asks for
        # which tool with exactly the arguments the gateway holds.
        panel = await open_panel_from_status_bar(page)
        approvals = panel.locator(".llmgw-approvals")
        await expect(approvals).to_have_attribute("data-count", "1", timeout=UI)
        approval = approvals.locator(f'.llmgw-approval[data-approval-id="{approval_id}"]')
        await expect(approval.locator(".llmgw-approval-caller")).to_have_text("review-bot")
        await expect(approval.locator(".llmgw-approval-caller")).to_have_attribute(
            "title", "grant:review-bot"
        )
        await expect(approval.locator(".llmgw-approval-tool")).to_have_text("codex_request_async")
        await expect(approval.locator(".llmgw-approval-args")).to_contain_text(prompt)
        pending = (await rest.get("approvals")).json()["approvals"]
        held = next(a for a in pending if a["id"] == approval_id)
        shown = json.loads(await approval.locator(".llmgw-approval-args").inner_text())
        assert shown == held["arguments"]
        assert shown["prompt"] == prompt

        row = job_row(page, job_id)
        await expect(row).to_have_attribute("data-status", "awaiting_approval", timeout=UI)
        await expect(row.locator(".llmgw-job-caller")).to_have_text("review-bot")
        await row.locator(".llmgw-job-header").click()  # expanded: live events, then the answer
        await expect(row).to_have_class(re.compile(r"\bllmgw-mod-expanded\b"))
        await panel.screenshot(path=output_dir / "panel-approval.png")

        # Approve by clicking: the approval and its notification go away, the job runs and ends
        # with the model's answer rendered in the row.
        await approval.locator(".llmgw-approve").click()
        await expect(approvals).to_have_attribute("data-count", "0", timeout=UI)
        await expect(approval).to_have_count(0)
        await expect(page.locator(".Toastify__toast")).to_have_count(0, timeout=UI)
        await expect(row).to_have_attribute("data-status", "succeeded", timeout=JOB_DONE)
        await expect(row.locator(".llmgw-job-status")).to_have_attribute("data-status", "succeeded")
        await expect(row.locator(".llmgw-job-answer")).to_contain_text(
            f"echo: {prompt}", timeout=UI
        )
        await expect(row.locator(".llmgw-job-usage")).not_to_be_empty()
        await expect(row.locator('.llmgw-job-event[data-type="turn.completed"]')).to_have_count(
            1, timeout=UI
        )
        await expect(row.locator(".llmgw-cancel")).to_have_count(0)
        await expect(text).to_have_text("Agents: idle", timeout=UI)
        await expect(status_bar(page)).to_have_attribute("data-state", "idle")
        await panel.screenshot(path=output_dir / "panel-answer.png")

        # The agent sees the same outcome, and the gateway recorded the owner's decision.
        status = await call(agent, "llm_job_status", {"job_id": job_id})
        assert status["job"]["status"] == "succeeded"
    decided = (await rest.get("approvals", params={"status": "all"})).json()["approvals"]
    assert next(a for a in decided if a["id"] == approval_id)["status"] == "approved"
    result = (await rest.get(f"jobs/{job_id}/result")).json()
    assert result["final_message"] == f"echo: {prompt}"


async def test_the_owner_cancels_a_slow_job_by_clicking(
    page: Page, lab: JupyterProcess, rest: httpx.AsyncClient, output_dir: Path
) -> None:
    await lab_is_up(page)
    panel = await open_panel_from_status_bar(page)
    submitted = await rest.post(
        "tools/codex_request_async", json={"prompt": "take your time [mock:delay=60]"}
    )
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["structured"]["job"]["id"]

    row = job_row(page, job_id)
    await expect(row).to_have_attribute("data-status", "running", timeout=JOB_DONE)
    await expect(row.locator(".llmgw-job-caller")).to_have_text("owner")
    await expect(page.locator(".llmgw-statusbar-text")).to_have_text(
        "Agents: 1 running", timeout=UI
    )
    await row.locator(".llmgw-job-header").click()
    # Codex has started its turn and now waits on the (slow) model.
    await expect(row.locator('.llmgw-job-event[data-type="turn.started"]')).to_have_count(
        1, timeout=JOB_DONE
    )
    await page.locator("#jp-main-statusbar").screenshot(path=output_dir / "statusbar-running.png")

    await row.locator(".llmgw-cancel").click()
    await expect(row).to_have_attribute("data-status", "cancelled", timeout=UI)
    await expect(row.locator(".llmgw-job-status")).to_have_attribute("data-status", "cancelled")
    await expect(row.locator(".llmgw-cancel")).to_have_count(0)
    await expect(row.locator(".llmgw-job-answer")).to_have_count(0)
    await expect(page.locator(".llmgw-statusbar-text")).to_have_text("Agents: idle", timeout=UI)
    await panel.screenshot(path=output_dir / "panel-cancelled.png")

    job = (await rest.get(f"jobs/{job_id}")).json()
    assert job["status"] == "cancelled"
    assert job["finished_at"] is not None

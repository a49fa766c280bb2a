"""Stored XSS: an agent's answer and prompt full of script payloads stay text in a real browser.

A Codex job (the real CLI against the mock model, which answers ``echo: <prompt>``) whose answer
carries ``<img onerror>``, ``<script>``, ``<iframe srcdoc>``, SVG, ``javascript:`` and ``data:``
links, and a grant's pending request whose prompt carries them too, are shown by every view the
owner has: the live job view (``%%codex_async``, ``%llm_job``), the ``JobResult`` repr,
``%llm_result``, ``%llm_jobs``, ``%llm_approvals`` and the lab panel. Each payload, if it ran,
would set a ``window.__xss_*`` marker; none may be set, no active element or attribute may reach
the page, and the payload text must be visible as text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from playwright.async_api import Locator, Page, expect

from llmgw_jupyter.testing.jupyter_process import JupyterProcess
from llmgw_jupyter.testing.mcp_agent import agent_session

LAB_LOAD = 90_000  # ms
JOB_DONE = 120_000  # ms: the notebook waits for a Codex run against the mock model
UI = 15_000  # ms

IMG = '<img src=x onerror="window.__xss_img=1">'
PAYLOAD = "\n\n".join(
    [
        f"{IMG} XSS-PROBE start",
        "<script>window.__xss_script=1</script>",
        '<iframe srcdoc="<script>parent.__xss_iframe=1</script>"></iframe>',
        '<svg><animate onbegin="window.__xss_svg=1" attributeName="x" dur="1s"></animate></svg>',
        '<a href="javascript:window.__xss_anchor=1">anchor-payload</a>',
        "[md-link-payload](javascript:window.__xss_mdlink=1)",
        "<javascript:window.__xss_autolink=1>",
        "[data-payload](data:text/html,<script>parent.__xss_data=1</script>)",
        '<details open ontoggle="window.__xss_details=1">details-payload</details>',
        "XSS-PROBE end",
    ]
)
APPROVAL_PROMPT = '<img src=x onerror="window.__xss_approval=1"> approve me'
REVIEW_POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {"codex_request_async": {"action": "require_approval"}},
}
CELLS = [
    "%load_ext llmgw_jupyter",
    f"%%codex_async --out job\n{PAYLOAD}",
    "result = job.result(timeout=110)\nresult",
    "%llm_result {job.id}",
    "%llm_job {job.id}",
    "%llm_jobs",
    "%llm_approvals",
    "print('XSS-CELLS-DONE')",
]
# Anything that could run script or load something by itself, found anywhere in a view.
ACTIVE_ELEMENTS = "script, iframe, object, embed, animate, set, img[src='x'], [srcdoc]"
SCAN = """(root, activeElements) => {
  const found = [];
  for (const el of root.querySelectorAll('*')) {
    for (const attr of el.attributes) {
      const value = attr.value.replace(/[\\u0000-\\u0020]/g, '').toLowerCase();
      if (attr.name.toLowerCase().startsWith('on')) found.push(`${el.tagName} ${attr.name}`);
      if (/^(javascript|vbscript|data):/.test(value) && !attr.name.startsWith('data-'))
        found.push(`${el.tagName} ${attr.name}=${attr.value}`);
    }
  }
  for (const el of root.querySelectorAll(activeElements)) found.push(el.outerHTML);
  return found;
}"""
# Inserted after the views rendered: once this image's error handler ran, the payload images
# (same broken URL, inserted earlier) have had their error events too.
CONTROL = """(root) => {
  const img = document.createElement('img');
  img.addEventListener('error', () => {
    img.remove();
    window.__llmgw_control = (window.__llmgw_control || 0) + 1;
  });
  img.src = 'x';
  img.style.display = 'none';
  root.appendChild(img);
}"""

pytestmark = pytest.mark.timeout(420)


def notebook_json() -> dict[str, Any]:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return dict(json.loads(nbformat.writes(notebook)))


async def scan(root: Locator) -> list[str]:
    """Active elements and attributes under ``root``: event handlers, script URLs."""
    handle = await root.element_handle()
    assert handle is not None
    found = await handle.evaluate(SCAN, ACTIVE_ELEMENTS)
    return list(found)


async def markers(page: Page) -> list[str]:
    return list(await page.evaluate("Object.keys(window).filter(key => key.startsWith('__xss'))"))


async def payloads_had_their_chance(page: Page, root: Locator) -> None:
    """A broken image inserted now has fired its error event: earlier ones have too."""
    before = await page.evaluate("window.__llmgw_control || 0")
    handle = await root.element_handle()
    assert handle is not None
    await handle.evaluate(CONTROL)
    await page.wait_for_function(f"(window.__llmgw_control || 0) > {before}", timeout=UI)


async def run_every_cell(page: Page, notebook: Locator) -> None:
    """The toolbar's run button on each cell in turn, once the one before has run."""
    cells = notebook.locator(".jp-CodeCell")
    run = page.locator(
        '.jp-NotebookPanel-toolbar [data-command="notebook:run-cell-and-select-next"]'
    )
    await cells.first.locator(".jp-InputPrompt").click()
    for index in range(len(CELLS)):
        cell = cells.nth(index)
        await expect(cell).to_have_class(re.compile(r"\bjp-mod-active\b"))
        await run.click()
        await expect(cell.locator(".jp-InputPrompt")).to_have_text(
            re.compile(r"\[\d+\]"), timeout=JOB_DONE
        )


async def test_script_payloads_in_answers_and_prompts_stay_text_everywhere(
    page: Page, lab: JupyterProcess, rest: httpx.AsyncClient, output_dir: Path
) -> None:
    async with httpx.AsyncClient(base_url=lab.url, headers=lab.auth, timeout=30.0) as jupyter:
        # Every cell in the DOM (no windowing), so each output can be looked at.
        settings = await jupyter.put(
            "lab/api/settings/@jupyterlab/notebook-extension:tracker",
            json={"raw": json.dumps({"windowingMode": "none"})},
        )
        assert settings.status_code == 204, settings.text
        saved = await jupyter.put(
            "api/contents/xss.ipynb",
            json={"type": "notebook", "format": "json", "content": notebook_json()},
        )
        assert saved.status_code in (200, 201), saved.text

    # A grant's request waits for the owner; its prompt carries a payload too.
    created = await rest.post("grants", json={"name": "xss-bot", "policy": REVIEW_POLICY})
    assert created.status_code == 201, created.text
    async with agent_session(lab.mcp_url, created.json()["token"], 30.0) as agent:
        submitted = await agent.call_tool("codex_request_async", {"prompt": APPROVAL_PROMPT})
        assert submitted.structured_content is not None, submitted.content
        assert submitted.structured_content["job"]["status"] == "awaiting_approval"

    await page.goto(f"{lab.url}lab/tree/xss.ipynb?token={lab.token}")
    notebook = page.locator(".jp-NotebookPanel .jp-Notebook")
    await expect(notebook).to_be_visible(timeout=LAB_LOAD)
    kernel = page.locator(".jp-StatusBar-TextItem", has_text="Python 3 (ipykernel) | Idle")
    await expect(kernel).to_have_count(1, timeout=LAB_LOAD)
    await run_every_cell(page, notebook)
    cells = notebook.locator(".jp-CodeCell")
    await expect(cells.nth(len(CELLS) - 1).locator(".jp-OutputArea-output")).to_contain_text(
        "XSS-CELLS-DONE", timeout=JOB_DONE
    )

    def output(index: int) -> Locator:
        return cells.nth(index).locator(".jp-OutputArea")

    # Every view has rendered (the widgets' answers are in): nothing may have run.
    for index in (1, 4):
        await expect(output(index).locator(".llmgw-answer")).to_contain_text(
            "XSS-PROBE end", timeout=UI
        )
    await payloads_had_their_chance(page, notebook)
    assert (await markers(page), await scan(notebook)) == ([], [])

    # The live job view of %%codex_async and of %llm_job (the lab's renderer of the job's own
    # MIME type, preferred to the widget): Markdown through the panel's strict sanitizer, so raw
    # HTML elements are dropped (their text stays) and links lose unsafe targets.
    for index in (1, 4):
        view = output(index).locator(".llmgw-output")
        await expect(view).to_have_attribute("data-source", "live", timeout=UI)
        answer = view.locator(".llmgw-answer")
        await expect(answer).to_contain_text("echo: [image] XSS-PROBE start", timeout=UI)
        await expect(answer).to_contain_text("XSS-PROBE end")
        for text in ("anchor-payload", "md-link-payload", "details-payload"):
            await expect(answer).to_contain_text(text)
            await expect(answer.locator("a[href]", has_text=text)).to_have_count(0)
    # The JobResult repr and %llm_result.
    for index in (2, 3):
        await expect(output(index)).to_contain_text(f"echo: {IMG} XSS-PROBE start")
        await expect(output(index)).to_contain_text('<a href="javascript:window.__xss_anchor=1">')
    # %llm_jobs: both prompts as text; %llm_approvals: the grant's prompt as text.
    await expect(output(5)).to_contain_text(IMG)
    await expect(output(5)).to_contain_text(APPROVAL_PROMPT)
    await expect(output(6).locator(".llmgw-approval-row")).to_contain_text(APPROVAL_PROMPT)
    await notebook.screenshot(path=output_dir / "untrusted-notebook.png")

    # The lab panel: the job's answer and both prompts.
    await page.locator(".llmgw-statusbar-text").click()
    panel = page.locator("#llmgw-panel.llmgw-panel")
    await expect(panel).to_be_visible(timeout=UI)
    jobs = (await rest.get("jobs", params={"caller": "owner"})).json()["jobs"]
    job_id = next(j["id"] for j in jobs if "XSS-PROBE" in (j.get("prompt_preview") or ""))
    row = panel.locator(f'.llmgw-job[data-job-id="{job_id}"]')
    await expect(row).to_have_attribute("data-status", "succeeded", timeout=UI)
    await expect(row.locator(".llmgw-job-prompt")).to_contain_text(IMG)
    await row.locator(".llmgw-job-header").click()
    answer = row.locator(".llmgw-job-answer")
    # The panel renders with JupyterLab's Markdown pipeline and a strict sanitizer of its own:
    # raw HTML elements are dropped (their text stays), links lose unsafe targets.
    await expect(answer).to_contain_text("XSS-PROBE start", timeout=UI)
    await expect(answer).to_contain_text("XSS-PROBE end")
    for text in ("anchor-payload", "md-link-payload", "details-payload"):
        await expect(answer).to_contain_text(text)
        await expect(answer.locator("a[href]", has_text=text)).to_have_count(0)
    await expect(panel.locator(".llmgw-approval-args")).to_contain_text("window.__xss_approval")
    await panel.screenshot(path=output_dir / "untrusted-panel.png")

    await payloads_had_their_chance(page, panel)
    assert (await markers(page), await scan(panel)) == ([], [])
    # No link in the answer leads anywhere but http(s)/mailto.
    hrefs = await answer.locator("a[href]").evaluate_all("links => links.map(a => a.href)")
    assert [h for h in hrefs if not h.startswith(("http:", "https:", "mailto:"))] == []

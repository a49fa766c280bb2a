"""Job views in a real JupyterLab and Chromium: readable in every theme, alive after restarts.

* axe-core (the npm package pinned in labextension/package.json, injected from node_modules) checks
  the jobs panel, the status bar and notebook job outputs in a running, a finished, a failed, a
  denied and an awaiting-approval state, in the light and the dark theme: no colour-contrast and
  no label violation may be found in our elements. Screenshots of each state and theme go to
  ``test-output/ui/<theme>-<state>.png``.
* A job run from a notebook (the real magics) shows its answer after a kernel restart and a page
  reload, without running anything: the output's ``application/vnd.llmgw.job+json`` view talks
  to the server, not to the (dead) kernel.
* With a second provider beside Codex (the fake one, registered by configuration), the panel's
  provider filter lists both and narrows the list, each row names its provider, and the usage
  totals (per provider and per caller) are shown and pass axe too.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from playwright.async_api import Locator, Page, expect

from llmgw_jupyter.testing.jupyter_process import JupyterProcess
from llmgw_jupyter.testing.mcp_agent import agent_session

LAB_LOAD = 90_000  # ms
JOB_DONE = 120_000  # ms
UI = 15_000  # ms
JOB_MIME = "application/vnd.llmgw.job+json"
AXE = (
    Path(__file__).resolve().parents[2]
    / "labextension"
    / "node_modules"
    / "axe-core"
    / "axe.min.js"
)
THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}
STATES = ("running", "finished", "failed", "denied", "awaiting-approval")
# What the view of each state says it is (data-state of the output and of the panel row).
SHOWN_STATE = {
    "running": "running",
    "finished": "succeeded",
    "failed": "failed",
    "denied": "denied",
    "awaiting-approval": "awaiting_approval",
}
AXE_RULES = [
    "color-contrast",
    "label",
    "button-name",
    "select-name",
    "input-button-name",
    "link-name",
    "aria-command-name",
    "aria-input-field-name",
    "aria-toggle-field-name",
    "aria-tooltip-name",
    "aria-progressbar-name",
    "aria-meter-name",
    "aria-dialog-name",
]
OURS = ["#llmgw-panel", ".llmgw-statusbar", ".llmgw-output"]
RUN_AXE = """async ([include, rules]) => {
  const present = include.filter(selector => document.querySelector(selector));
  const result = await window.axe.run(
    { include: present.map(selector => [selector]) },
    { runOnly: { type: 'rule', values: rules }, resultTypes: ['violations'] }
  );
  return result.violations.map(v => ({
    rule: v.id,
    help: v.help,
    nodes: v.nodes.map(n => ({ target: n.target.join(' '), why: n.failureSummary }))
  }));
}"""
DENY_REASON = "not on a Friday"
DENIED = re.compile(rf"denied by owner at \d\d:\d\d:\d\d: {DENY_REASON}")
REVIEW_POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {
        "codex_request_async": {"action": "require_approval", "approval": {"timeout": "30m"}},
    },
}

# The fake provider beside Codex: a second provider for the panel's filter and totals.
SECOND_PROVIDER = """\
c.LLMGatewayApp.providers = {
    "fake": {"class": "llmgw_jupyter.testing.fake_provider:FakeProvider"}
}
"""
FAKE_USAGE = (1200, 34)  # the tokens the fake job reports

pytestmark = pytest.mark.timeout(480)


@pytest.fixture(scope="module")
def lab_server_config() -> str:
    """This module's JupyterLab: as conftest's, with the fake provider configured too."""
    return SECOND_PROVIDER


async def settled(rest: httpx.AsyncClient, job_id: str, statuses: set[str]) -> dict[str, Any]:
    """The job once its status is one of ``statuses`` (long-polls its events, no sleeping)."""
    after = 0
    for _ in range(200):
        answer = await rest.get(f"jobs/{job_id}/events", params={"after": after, "wait": 10})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        if body["events"]:
            after = body["events"][-1]["seq"]
        if body["job"]["status"] in statuses:
            return dict(body["job"])
    raise AssertionError(f"job {job_id} never reached {statuses}")


async def start(rest: httpx.AsyncClient, prompt: str) -> str:
    submitted = await rest.post("tools/codex_request_async", json={"prompt": prompt})
    assert submitted.status_code == 200, submitted.text
    return str(submitted.json()["structured"]["job"]["id"])


async def jobs_in_every_state(lab: JupyterProcess, rest: httpx.AsyncClient) -> dict[str, str]:
    """One job per state: running, finished, failed, denied (with a reason), awaiting approval."""
    jobs = {
        "finished": await start(rest, "Explain a generator in one sentence."),
        "failed": await start(rest, "This will not work [mock:fail=400]"),
        "running": await start(rest, "Take your time [mock:delay=300]"),
    }
    created = await rest.post("grants", json={"name": "views-bot", "policy": REVIEW_POLICY})
    assert created.status_code == 201, created.text
    async with agent_session(lab.mcp_url, created.json()["token"], 30.0) as agent:
        for state in ("denied", "awaiting-approval"):
            result = await agent.call_tool(
                "codex_request_async", {"prompt": f"Please run me ({state})"}
            )
            assert result.structured_content is not None, result.content
            jobs[state] = result.structured_content["job"]["id"]
            if state == "denied":
                approval_id = result.structured_content["approval"]["id"]
                denied = await rest.post(
                    f"approvals/{approval_id}/deny", json={"reason": DENY_REASON}
                )
                assert denied.status_code == 200, denied.text
    await settled(rest, jobs["finished"], {"succeeded"})
    await settled(rest, jobs["failed"], {"failed"})
    await settled(rest, jobs["running"], {"running"})
    denied_job = await settled(rest, jobs["denied"], {"cancelled"})
    assert denied_job["cancel_reason"] == "approval_denied"
    return jobs


def outputs_notebook(jobs: dict[str, str]) -> dict[str, Any]:
    """A notebook whose saved outputs are job bundles, as the magics write them."""
    notebook = nbformat.v4.new_notebook()
    for state in STATES:
        cell = nbformat.v4.new_code_cell(f"# the {state} job")
        cell.outputs = [
            nbformat.v4.new_output(
                "display_data",
                data={
                    JOB_MIME: {"version": 1, "job_id": jobs[state], "via": "server"},
                    "text/markdown": f"saved snapshot of the {state} job",
                    "text/plain": f"job {jobs[state]}",
                },
            )
        ]
        notebook.cells.append(cell)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    return dict(json.loads(nbformat.writes(notebook)))


async def put_setting(lab: JupyterProcess, plugin: str, values: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=lab.url, headers=lab.auth, timeout=30.0) as jupyter:
        answer = await jupyter.put(f"lab/api/settings/{plugin}", json={"raw": json.dumps(values)})
        assert answer.status_code == 204, answer.text


async def save_notebook(lab: JupyterProcess, name: str, content: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=lab.url, headers=lab.auth, timeout=30.0) as jupyter:
        saved = await jupyter.put(
            f"api/contents/{name}", json={"type": "notebook", "format": "json", "content": content}
        )
        assert saved.status_code in (200, 201), saved.text


async def choose_theme(page: Page, theme_name: str) -> None:
    """Settings > Theme > ``theme_name``, as a person switches themes."""

    def item(label: str) -> Locator:
        name = page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(label)}$"))
        return page.locator(".lm-Menu .lm-Menu-item").filter(has=name)

    await (
        page.locator("#jp-menu-panel").get_by_role("menuitem", name="Settings", exact=True).click()
    )
    await item("Theme").click()
    await item(theme_name).click()


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.add_script_tag(path=str(AXE))
    return list(await page.evaluate(RUN_AXE, [OURS, AXE_RULES]))


@pytest.fixture
async def views_lab(lab: JupyterProcess) -> AsyncIterator[JupyterProcess]:
    """Every notebook cell in the DOM (no windowing); the light theme again afterwards."""
    await put_setting(lab, "@jupyterlab/notebook-extension:tracker", {"windowingMode": "none"})
    yield lab
    await put_setting(lab, "@jupyterlab/apputils-extension:themes", {"theme": THEMES["light"]})


def output_of(page: Page, job_id: str) -> Locator:
    return page.locator(f'.jp-OutputArea .llmgw-output[data-job-id="{job_id}"]')


async def second_provider_in_the_panel(panel: Locator, jobs: dict[str, str], fake_job: str) -> None:
    """The provider filter narrows the list to one provider and back; each row names its
    provider; the usage totals open (and stay open, so axe checks their tables too)."""
    fake_row = panel.locator(f'.llmgw-job[data-job-id="{fake_job}"]')
    await expect(fake_row.get_by_test_id("llmgw-job-provider")).to_have_text("fake", timeout=UI)
    codex_row = panel.locator(f'.llmgw-job[data-job-id="{jobs["finished"]}"]')
    await expect(codex_row.get_by_test_id("llmgw-job-provider")).to_have_text("Codex")

    chooser = panel.get_by_role("combobox", name="Provider")  # its label names it
    await expect(chooser.locator("option")).to_have_text(["all", "Codex", "fake"], timeout=UI)
    await chooser.select_option("fake")
    await expect(panel.locator(".llmgw-job")).to_have_count(1, timeout=UI)
    await expect(fake_row).to_be_visible()
    await chooser.select_option("codex")
    await expect(panel.locator(".llmgw-job")).to_have_count(len(jobs), timeout=UI)
    await expect(fake_row).to_have_count(0)
    await chooser.select_option("")
    await expect(panel.locator(".llmgw-job")).to_have_count(len(jobs) + 1, timeout=UI)

    usage = panel.get_by_test_id("llmgw-usage")
    await expect(usage.get_by_test_id("llmgw-usage-headline")).to_contain_text(
        f"{len(jobs) + 1} jobs", timeout=UI
    )
    await usage.locator("summary").click()
    fake_total = usage.get_by_test_id("llmgw-usage-by-provider").locator('tr[data-name="fake"]')
    await expect(fake_total.locator("td")).to_have_text(["1", "1,200", "34", "—"])
    by_caller = usage.get_by_test_id("llmgw-usage-by-caller")
    await expect(by_caller.locator("tbody tr")).to_have_count(2)  # owner and views-bot


async def test_every_job_state_reads_well_in_the_light_and_the_dark_theme(
    page: Page, views_lab: JupyterProcess, rest: httpx.AsyncClient, output_dir: Path
) -> None:
    lab = views_lab
    assert AXE.is_file(), f"{AXE} missing: run jlpm install in labextension/"
    jobs = await jobs_in_every_state(lab, rest)
    fake_prompt = "a second provider [fake:usage={}/{}]".format(*FAKE_USAGE)
    fake = await rest.post("tools/fake_request_async", json={"prompt": fake_prompt})
    assert fake.status_code == 200, fake.text
    fake_job = str(fake.json()["structured"]["job"]["id"])
    await settled(rest, fake_job, {"succeeded"})
    summary = (await rest.get("summary")).json()
    assert summary["model"]["local_echo"] is True
    fake_total = next(t for t in summary["usage"]["by_provider"] if t["name"] == "fake")
    assert (fake_total["input_tokens"], fake_total["output_tokens"]) == FAKE_USAGE
    await save_notebook(lab, "views.ipynb", outputs_notebook(jobs))

    found: dict[str, list[dict[str, Any]]] = {}
    try:
        await put_setting(lab, "@jupyterlab/apputils-extension:themes", {"theme": THEMES["light"]})
        await page.goto(f"{lab.url}lab/tree/views.ipynb?token={lab.token}")
        for theme, theme_name in THEMES.items():
            if theme != "light":
                # Switched live, without a reload: every colour must follow the theme at once.
                await choose_theme(page, theme_name)
            await expect(page.locator("body")).to_have_attribute(
                "data-jp-theme-name", theme_name, timeout=LAB_LOAD
            )
            # The status bar names the echo model; the panel is open with the approval card.
            await expect(page.locator(".llmgw-statusbar-model")).to_have_text(
                "local echo model", timeout=LAB_LOAD
            )
            panel = page.locator("#llmgw-panel.llmgw-panel")
            if not await panel.is_visible():
                await page.locator(".llmgw-statusbar-text").click()
            await expect(panel).to_be_visible(timeout=UI)
            await expect(panel.locator(".llmgw-approvals")).to_have_attribute("data-count", "1")

            # Each output is the live view of its job and says what happened.
            for state, job_id in jobs.items():
                view = output_of(page, job_id)
                await expect(view).to_have_attribute("data-source", "live", timeout=UI)
                await expect(view).to_have_attribute("data-state", SHOWN_STATE[state])
                row = panel.locator(f'.llmgw-job[data-job-id="{job_id}"]')
                await expect(row).to_have_attribute("data-state", SHOWN_STATE[state], timeout=UI)
            await expect(
                output_of(page, jobs["finished"]).locator(".llmgw-answer")
            ).to_contain_text("echo: Explain a generator in one sentence.")
            await expect(output_of(page, jobs["denied"])).to_contain_text(DENIED, timeout=UI)
            await expect(
                panel.locator(f'.llmgw-job[data-job-id="{jobs["denied"]}"] .llmgw-job-outcome')
            ).to_have_text(DENIED)
            waiting = output_of(page, jobs["awaiting-approval"])
            await expect(waiting.locator(".llmgw-approve")).to_be_visible(timeout=UI)
            await expect(waiting.locator(".llmgw-approval-expires")).to_have_text(
                re.compile(r"^expires in \d+ min$")
            )
            await expect(output_of(page, jobs["failed"]).locator(".llmgw-cancel")).to_have_count(0)
            await expect(output_of(page, jobs["running"]).locator(".llmgw-cancel")).to_be_visible()
            if theme == "light":
                await second_provider_in_the_panel(panel, jobs, fake_job)

            found[theme] = await axe_violations(page)
            for state, job_id in jobs.items():
                await output_of(page, job_id).screenshot(path=output_dir / f"{theme}-{state}.png")
            await panel.screenshot(path=output_dir / f"{theme}-panel.png")
            await page.locator("#jp-main-statusbar").screenshot(
                path=output_dir / f"{theme}-statusbar.png"
            )
    finally:
        cancelled = await rest.post(f"jobs/{jobs['running']}/cancel", json={})
        assert cancelled.status_code == 200, cancelled.text
    assert found == {"light": [], "dark": []}


async def test_a_notebooks_job_output_shows_its_answer_after_a_kernel_restart_and_a_reload(
    page: Page, views_lab: JupyterProcess, output_dir: Path
) -> None:
    lab = views_lab
    notebook = nbformat.v4.new_notebook()
    prompt = "What outlives a kernel?"
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext llmgw_jupyter"),
        nbformat.v4.new_code_cell(f"%%codex_async --out job\n{prompt}"),
        nbformat.v4.new_code_cell("print(job.result(timeout=110).final_message)"),
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    await save_notebook(lab, "outlives.ipynb", dict(json.loads(nbformat.writes(notebook))))

    # ?reset: a fresh workspace, not the one the module's earlier test left behind (another
    # notebook and the jobs panel open, the keyboard focus elsewhere).
    await page.goto(f"{lab.url}lab/tree/outlives.ipynb?reset&token={lab.token}")
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell")
    kernel_idle = page.locator(".jp-StatusBar-TextItem", has_text="Python 3 (ipykernel) | Idle")
    await expect(kernel_idle).to_have_count(1, timeout=LAB_LOAD)
    # Shift+Enter, not the toolbar's Run button: with the jobs panel open (the module's earlier
    # test leaves it so in the saved workspace) a narrow toolbar folds that button away.
    await cells.first.locator(".jp-InputPrompt").click()
    for index in range(3):
        await expect(cells.nth(index)).to_have_class(re.compile(r"\bjp-mod-active\b"))
        await page.keyboard.press("Shift+Enter")
        await expect(cells.nth(index).locator(".jp-InputPrompt")).to_have_text(
            re.compile(r"\[\d+\]"), timeout=JOB_DONE
        )
    # The prompt number (shell channel) may land before the printed answer (iopub) under load,
    # and JupyterLab's windowed notebook renders outputs only of cells in view.
    await cells.nth(2).scroll_into_view_if_needed()
    await expect(cells.nth(2).locator(".jp-OutputArea")).to_contain_text(
        f"echo: {prompt}", timeout=UI
    )
    view = cells.nth(1).locator(".llmgw-output")
    await expect(view).to_have_attribute("data-state", "succeeded", timeout=UI)
    job_id = await view.get_attribute("data-job-id")
    assert job_id and re.fullmatch(r"[0-9a-f]{12}", job_id)
    await page.keyboard.press("Control+s")
    current_tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current")
    await expect(current_tab).to_contain_text("outlives.ipynb")
    await expect(current_tab).not_to_have_class(re.compile(r"\bjp-mod-dirty\b"), timeout=UI)

    # Restart the kernel (its widgets die with it), then reload the page: nothing runs again.
    async with httpx.AsyncClient(base_url=lab.url, headers=lab.auth, timeout=30.0) as jupyter:
        sessions = (await jupyter.get("api/sessions")).json()
        kernel = next(s["kernel"]["id"] for s in sessions if s["path"].endswith("outlives.ipynb"))
        restarted = await jupyter.post(f"api/kernels/{kernel}/restart")
        assert restarted.status_code == 200, restarted.text
    await page.reload()
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell")
    view = cells.nth(1).locator(f'.llmgw-output[data-job-id="{job_id}"]')
    await expect(view).to_have_attribute("data-source", "live", timeout=LAB_LOAD)
    await expect(view).to_have_attribute("data-state", "succeeded")
    await expect(view.locator(".llmgw-answer")).to_have_text(f"echo: {prompt}")
    await expect(page.locator(".jp-OutputArea", has_text="model not found")).to_have_count(0)
    await expect(cells.nth(1).locator(".jp-InputPrompt")).to_have_text(re.compile(r"\[\d+\]"))
    await cells.nth(1).screenshot(path=output_dir / "output-after-kernel-restart.png")

"""What the job views say and show, in a real kernel with the embedded gateway: states named
for what happened, only the controls a state allows, one approval design that follows the
decision wherever it is made, theme colours only, and outputs that outlive the kernel (the job's
own MIME type and a snapshot that the end of the job updates).

Jobs run the fake CLI behind Codex's tools (``kernel``), except where the test is about what
Codex's answers or model look like (``codex_kernel``).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from kernel_harness import MODEL_REF, WIDGET_VIEW, KernelHarness, WidgetModel, value

from llmgw_jupyter.kernel.handle import JOB_MIME

pytestmark = pytest.mark.timeout(240)

# Colours must come from the theme: no hex, rgb()/hsl() or named colour in any style we write.
HEX_COLOUR = re.compile(r"(?<!&)#[0-9a-fA-F]{3,8}\b")
FUNCTION_COLOUR = re.compile(r"\b(?:rgba?|hsla?)\(", re.IGNORECASE)
STYLE_ATTRIBUTE = re.compile(r'style="([^"]*)"')
COLOUR_PROPERTIES = re.compile(r"^(color|background(-color)?|border(-[a-z]+)*|outline)$")
THEME_VARIABLE = re.compile(r"var\(--jp-[a-z0-9-]+\)")
NOT_A_COLOUR = re.compile(r"^(\d+(\.\d+)?(px|em|%)?|solid|none|inherit|transparent)$")


# An agent (a grant) whose requests wait for the owner; ``timeout`` is the approval's lifetime.
AGENT_SETUP = """
from llmgw_jupyter.kernel.client import current_client
from llmgw_jupyter.tools import Caller
_c = current_client()
def make_agent(name, timeout=600):
    _c.blocking(_c.create_grant(name, {'version': '1', 'default': 'allow', 'tools': {
        'codex_request_async': {'action': 'require_approval', 'approval': {'timeout': timeout}}}}))
def agent_submit(name, prompt):
    r = _c.blocking(_c.gateway.call('codex_request_async',
        {'prompt': prompt, 'working_dir': WORK}, Caller.grant(name)))
    assert not r.is_error, r.text
    return r.structured['job']['id']
def approval_of(job_id):
    return next(a['id'] for a in _c.blocking(_c.approvals('all')) if a['job_id'] == job_id)
def decide_elsewhere(job_id, approve, reason=None):
    _c.blocking(_c.gateway.decide_approval(approval_of(job_id), approve, reason=reason))
async def _revoke(name):
    task = _c.gateway.revoke_grant(name)
    if task is not None:
        await task
def revoke(name):
    _c.blocking(_revoke(name))
"""


@pytest.fixture
def kernel_setup() -> list[str]:
    """This module's kernels show the jobs table and know the agent's helpers."""
    return ["%llm_jobs", AGENT_SETUP]


def shown(kernel: KernelHarness, model: WidgetModel) -> bool:
    """Whether a widget is displayed: its Layout model's ``display`` is not ``none``."""
    match = MODEL_REF.match(str(model.state.get("layout") or ""))
    layout = kernel.models.get(match.group(1)) if match else None
    return layout is None or layout.state.get("display") != "none"


def visible_parts(kernel: KernelHarness, widget: WidgetModel) -> set[str]:
    parts = (
        "llmgw-approve",
        "llmgw-deny",
        "llmgw-cancel",
        "llmgw-fork",
        "llmgw-fork-prompt",
        "llmgw-events",
        "llmgw-session",
    )
    seen = set()
    for part in parts:
        model = kernel.child(widget, part)
        parents_shown = part not in ("llmgw-approve", "llmgw-deny") or shown(
            kernel, kernel.child(widget, "llmgw-approval")
        )
        if part in ("llmgw-cancel", "llmgw-fork", "llmgw-fork-prompt", "llmgw-session"):
            parents_shown = shown(kernel, kernel.child(widget, "llmgw-controls"))
        if shown(kernel, model) and parents_shown:
            seen.add(part)
    return seen


async def parts_become(kernel: KernelHarness, widget: WidgetModel, parts: set[str]) -> None:
    """Wait until exactly ``parts`` are visible (a state change is several widget updates)."""
    await kernel.wait_for(
        lambda: visible_parts(kernel, widget) == parts,
        15,
        f"visible parts {sorted(parts)} (now {sorted(visible_parts(kernel, widget))})",
    )


def header_of(kernel: KernelHarness, widget: WidgetModel) -> str:
    return str(kernel.child(widget, "llmgw-header").state["value"])


def outcome(kernel: KernelHarness, widget: WidgetModel) -> str | None:
    match = re.search(r'data-outcome="(\w+)"', header_of(kernel, widget))
    return match.group(1) if match else None


def all_html(kernel: KernelHarness) -> list[str]:
    """Every piece of HTML the kernel sent: widget values and HTML outputs (and updates)."""
    found = [str(m.state.get("value")) for m in kernel.models.values() if "value" in m.state]
    for model in kernel.models.values():
        found += [str(update["value"]) for _, update in model.history if "value" in update]
    for message in kernel.messages:
        data = message["content"].get("data") or {}
        if message["msg_type"] in ("display_data", "execute_result", "update_display_data"):
            found += [str(data[mime]) for mime in ("text/html", "text/markdown") if mime in data]
    return [text for text in found if "<" in text]


def assert_theme_colours_only(snippets: list[str]) -> None:
    assert snippets, "nothing to check"
    for snippet in snippets:
        assert not HEX_COLOUR.search(snippet), snippet
        assert not FUNCTION_COLOUR.search(snippet), snippet
        for style in STYLE_ATTRIBUTE.findall(snippet):
            for declaration in filter(None, (d.strip() for d in style.split(";"))):
                name, _, setting = declaration.partition(":")
                if not COLOUR_PROPERTIES.match(name.strip()):
                    continue
                rest = THEME_VARIABLE.sub(" ", setting).split()
                assert all(NOT_A_COLOUR.match(token) for token in rest), declaration


async def test_a_request_denied_elsewhere_says_denied_by_whom_and_why(
    kernel: KernelHarness,
) -> None:
    await kernel.execute("make_agent('deny-bot')")
    job_id = await value(kernel, "agent_submit('deny-bot', 'May I?')")
    await kernel.execute(f"held = %llm_job {job_id}")
    widget = await kernel.wait_status(job_id, {"awaiting_approval"})
    text = kernel.child(widget, "llmgw-approval-text")
    await kernel.wait_for(lambda: "requested by grant:deny-bot" in text.state["value"], 10)
    assert re.search(
        r'title="[^"]*\d\d:\d\d:\d\d[^"]*">expires in (9|10) min<', text.state["value"]
    )
    await parts_become(kernel, widget, {"llmgw-approve", "llmgw-deny"})
    assert "no progress yet" not in kernel.child(widget, "llmgw-events").state.get("value", "")

    await kernel.execute(f"decide_elsewhere({job_id!r}, False, 'too risky')")
    await kernel.wait_for(lambda: outcome(kernel, widget) == "denied", 30, "denied")
    await kernel.wait_for(
        lambda: "by owner: too risky" in header_of(kernel, widget), 10, "who and why"
    )
    header = header_of(kernel, widget)
    assert ">denied</span>" in header and "by owner: too risky" in header, header
    assert kernel.widget_status(widget) == "cancelled", "the job's status stays the truth"
    assert 'class="llmgw-clock"' not in header, "it never ran: no clock"
    await kernel.wait_for(
        lambda: "denied by owner: too risky" in text.state["value"], 10, "the decision"
    )
    await parts_become(kernel, widget, set())  # no buttons, fork box or empty progress
    assert "no progress yet" not in kernel.child(widget, "llmgw-events").state.get("value", "")
    assert not shown(kernel, kernel.child(widget, "llmgw-raw")), "no log of a job never run"
    summary = await value(kernel, "held.summary_line()")
    assert "denied (by owner: too risky)" in summary


async def test_an_expired_request_and_a_revoked_grant_are_named(kernel: KernelHarness) -> None:
    await kernel.execute("make_agent('slow-owner', timeout=2)")
    expiring = await value(kernel, "agent_submit('slow-owner', 'Anyone there?')")
    listing = await kernel.execute("%llm_approvals")
    assert len(listing.data(WIDGET_VIEW)) == 1
    await kernel.execute(f"%llm_job {expiring}")
    widget = await kernel.wait_job_widget(expiring)
    await kernel.wait_for(lambda: outcome(kernel, widget) == "approval_expired", 30, "expiry")
    assert ">approval expired</span>" in header_of(kernel, widget)
    await parts_become(kernel, widget, set())
    row = next(
        item
        for item in kernel.widgets_with("llmgw-approval-item")
        if expiring in str(kernel.child(item, "llmgw-approval-row").state["value"])
    )
    row_text = kernel.child(row, "llmgw-approval-row")
    await kernel.wait_for(
        lambda: 'data-status="expired"' in str(row_text.state["value"]), 30, "the row expired"
    )
    assert "approval expired" in row_text.state["value"]
    assert not shown(kernel, kernel.child(row, "llmgw-approve"))

    await kernel.execute("make_agent('gone-bot')")
    revoked = await value(kernel, "agent_submit('gone-bot', 'Before revocation')")
    await kernel.execute(f"%llm_job {revoked}")
    widget = await kernel.wait_status(revoked, {"awaiting_approval"})
    await kernel.execute("revoke('gone-bot')")
    await kernel.wait_for(lambda: outcome(kernel, widget) == "grant_revoked", 30, "revocation")
    header = header_of(kernel, widget)
    assert ">cancelled</span>" in header and "grant revoked" in header


async def test_controls_follow_the_state(kernel: KernelHarness) -> None:
    await kernel.execute("%codex_async --out slow --cd {WORK} Slow [fake:delay=30]")
    await kernel.execute("%codex_async --out bad --cd {WORK} Fail [fake:fail]")
    await kernel.execute("%codex_async --out good --cd {WORK} Fine")
    slow_id, bad_id, good_id = await value(kernel, "[slow.id, bad.id, good.id]")

    running = await kernel.wait_status(slow_id, {"running"})
    await parts_become(
        kernel,
        running,
        {"llmgw-cancel", "llmgw-session", "llmgw-fork", "llmgw-fork-prompt", "llmgw-events"},
    )

    failed = await kernel.wait_status(bad_id, {"failed"})
    await parts_become(kernel, failed, {"llmgw-events", "llmgw-session"})
    assert "✖" in kernel.child(failed, "llmgw-error").state["value"]

    done = await kernel.wait_status(good_id, {"succeeded"})
    await parts_become(
        kernel, done, {"llmgw-session", "llmgw-fork", "llmgw-fork-prompt", "llmgw-events"}
    )
    assert "no progress yet" not in kernel.child(done, "llmgw-events").state["value"]

    await kernel.execute("slow.cancel()")
    await kernel.wait_for(lambda: kernel.widget_status(running) == "cancelled", 30)
    assert "by owner" in header_of(kernel, running), "who cancelled it"
    await parts_become(kernel, running, {"llmgw-session", "llmgw-events"})


async def test_outputs_carry_the_job_mime_type_and_a_snapshot_the_end_updates(
    codex_kernel: KernelHarness,
) -> None:
    kernel = codex_kernel  # a multi-line answer, as a model writes it
    run = await kernel.execute(
        "%%codex_async --out job --cd {WORK}\nLine one\nline two [mock:steps=2,step_delay=0.3]"
    )
    job_id = await value(kernel, "job.id")
    [display] = [m for m in run.messages if m["msg_type"] == "display_data"]
    data = display["content"]["data"]
    assert data[JOB_MIME] == {"version": 1, "job_id": job_id, "via": "embedded"}
    assert set(data) == {WIDGET_VIEW, JOB_MIME, "text/html", "text/markdown", "text/plain"}
    assert job_id in data["text/markdown"] and job_id in data["text/html"]
    display_id = display["content"]["transient"]["display_id"]

    await kernel.wait_status(job_id, {"succeeded"})
    update = await kernel.wait_for(
        lambda: next(
            (
                m
                for m in kernel.messages
                if m["msg_type"] == "update_display_data"
                and m["content"]["transient"]["display_id"] == display_id
            ),
            None,
        ),
        30,
        "the snapshot updated at the end",
    )
    final = update["content"]["data"]
    assert final[JOB_MIME] == data[JOB_MIME] and final[WIDGET_VIEW] == data[WIDGET_VIEW]
    assert "echo: Line one\\\nline two" in final["text/markdown"], "literal, lines kept"
    assert "echo: Line one<br />\nline two" in final["text/html"], "single newlines kept"
    assert "succeeded" in final["text/markdown"]

    for cell in (
        "%%codex_async --out cell_job --cd {WORK}\nFrom a cell",
        "%codex_fork --cd {WORK} job Forked",
        f"%llm_job {job_id}",
    ):
        bundle = (await kernel.execute(cell)).data(JOB_MIME)
        assert len(bundle) == 1 and set(bundle[0]) == {"version", "job_id", "via"}, cell
    assert (await kernel.execute(f"%llm_job {job_id}")).data(JOB_MIME)[0]["job_id"] == job_id


async def test_nbconvert_shows_the_answer_without_the_kernel(
    kernel_tmp: Path, base_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notebook run by nbclient and exported by nbconvert: the answer is in the export.

    The real Codex, not the fake CLI: here the job ends during the third cell's wait, which
    updates the snapshot. A job that ends between two cells (the fake CLI takes 0.1 s) is seen by
    the follow task instead, whose update the next cell sends again (test_headless_snapshot).
    """
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter, MarkdownExporter

    for name, setting in {**base_env, "LLMGW_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(name, setting)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext llmgw_jupyter"),
        nbformat.v4.new_code_cell(f"job = %codex_async --cd {tmp_path} Exported <b>answer</b>"),
        nbformat.v4.new_code_cell("job.wait(60)"),
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    runner = NotebookClient(
        notebook,
        timeout=120,
        store_widget_state=False,  # as JupyterLab saves by default: no widget models
        resources={"metadata": {"path": str(tmp_path)}},
    )
    await runner.async_execute()
    outputs = notebook.cells[1].outputs
    bundle = next(o for o in outputs if o.output_type == "display_data")
    assert "echo: Exported" in bundle.data["text/markdown"], "updated when the job ended"
    markdown, _ = MarkdownExporter().from_notebook_node(notebook)
    assert "echo: Exported &lt;b&gt;answer&lt;/b&gt;" in markdown
    assert markdown.count("<b>answer</b>") == 1, "only in the cell's source"
    page, _ = HTMLExporter().from_notebook_node(notebook)
    assert "echo: Exported &lt;b&gt;answer&lt;/b&gt;" in page
    assert "model not found" not in page


async def test_every_colour_comes_from_the_theme(kernel: KernelHarness) -> None:
    await kernel.execute("make_agent('colour-bot')")
    waiting = await value(kernel, "agent_submit('colour-bot', 'Wait for me')")
    await kernel.execute(f"%llm_job {waiting}")
    await kernel.execute("%codex_async --out bad --cd {WORK} Fail [fake:fail]")
    await kernel.execute("%codex_async --out good --cd {WORK} Fine")
    await kernel.execute("%codex_async --out stopped --cd {WORK} Stop [fake:delay=30]")
    await kernel.execute("stopped.cancel()")
    bad_id, good_id = await value(kernel, "[bad.id, good.id]")
    await kernel.wait_status(bad_id, {"failed"})
    good = await kernel.wait_status(good_id, {"succeeded"})
    raw = kernel.child(good, "llmgw-raw-log")
    await kernel.wait_for(lambda: raw.state.get("value"), 10, "the raw log")
    await kernel.execute("%llm_approvals")
    await kernel.execute("%llm_jobs")
    await kernel.execute(f"decide_elsewhere({waiting!r}, False, 'no')")
    widget = await kernel.wait_job_widget(waiting)
    await kernel.wait_for(lambda: outcome(kernel, widget) == "denied", 30)
    await kernel.execute("%llm_result bad")
    snippets = all_html(kernel)
    assert any("var(--jp-" in s for s in snippets)
    assert_theme_colours_only(snippets)


async def test_the_jobs_table_reads_left_to_right_with_age_and_cut_prompts(
    kernel: KernelHarness,
) -> None:
    long_prompt = "A rather long prompt " * 10
    await kernel.execute(f"%codex_async --wait --quiet --cd {{WORK}} {long_prompt}")
    table = (await kernel.execute("%llm_jobs")).data("text/html")[0]
    cells = re.findall(r"<t[dh] ([^>]*)>", table)
    assert cells and all("text-align:left" in attributes for attributes in cells)
    assert re.search(r">A rather long prompt .{20,}…</td>", table), "cut with an ellipsis"
    assert long_prompt.strip() not in re.sub(r'title="[^"]*"', "", table)
    age = re.search(r'class="llmgw-age" title="(ran [\d.]+ s)">(\d+ s)</td>', table)
    assert age is not None, table
    assert ">age</th>" in table
    text = await value(
        kernel,
        "repr(__import__('llmgw_jupyter.kernel.magics').kernel.magics"
        ".JobTable(*_c.blocking(_c.list_jobs())))",
    )
    header, first = text.splitlines()[:2]
    assert header.index("status") == first.index("succeeded"), "left-aligned columns"
    assert "…" in first


async def test_the_widget_says_when_jobs_use_the_local_echo_model(
    codex_kernel: KernelHarness,
) -> None:
    kernel = codex_kernel  # Codex's model is the mock one
    await kernel.execute("%codex_async --out job --cd {WORK} Which model")
    job_id = await value(kernel, "job.id")
    widget = await kernel.wait_job_widget(job_id)
    await kernel.wait_for(
        lambda: 'data-local-echo="true"' in header_of(kernel, widget), 10, "the model"
    )
    assert "local echo model" in header_of(kernel, widget)
    assert await value(kernel, "_c.blocking(_c.summary())['model']['local_echo']") is True


async def test_the_jobs_table_follows_the_states_it_shows(kernel: KernelHarness) -> None:
    await kernel.execute("%codex_async --quiet --out slow --cd {WORK} Slow [fake:delay=30]")
    slow_id = await value(kernel, "slow.id")
    listing = await kernel.execute("%llm_jobs")
    [display] = [m for m in listing.messages if m["msg_type"] == "display_data"]
    display_id = display["content"]["transient"]["display_id"]
    assert re.search(r'data-status="(queued|running)"', display["content"]["data"]["text/html"])

    await kernel.execute("slow.cancel()")
    update = await kernel.wait_for(
        lambda: next(
            (
                m
                for m in kernel.messages
                if m["msg_type"] == "update_display_data"
                and m["content"]["transient"]["display_id"] == display_id
                and 'data-status="cancelled"' in m["content"]["data"]["text/html"]
            ),
            None,
        ),
        30,
        "the table to show the cancellation",
    )
    assert f"<code>{slow_id}</code>" in update["content"]["data"]["text/html"]
    assert "cancelled (by owner)" in update["content"]["data"]["text/html"]

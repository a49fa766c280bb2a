"""Both notebooks run top to bottom, unattended, against a server with the extension."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from kernel_harness import WIDGET_VIEW
from nbclient import NotebookClient

from llmgw_jupyter.testing.jupyter_process import JupyterProcess
from llmgw_jupyter.testing.mock_anthropic import MockAnthropicServer

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

pytestmark = pytest.mark.timeout(300)
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
USAGE_LINE = re.compile(r"^([\d,]+) tokens in \(([\d,]+) cached\), ([\d,]+) out, \$(\d+\.\d{4})$")


async def run_notebook(name: str, env: dict[str, str], workdir: Path) -> Any:
    """Execute a copy of the notebook in ``workdir``; the executed copy stays there."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    shutil.copy(NOTEBOOKS / name, path)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    try:
        await client.async_execute(env=env)
    finally:
        nbformat.write(notebook, path)
    return notebook


def cell(notebook: Any, source_start: str, *, exact: bool = False) -> Any:
    matches = [
        c
        for c in notebook.cells
        if c.cell_type == "code"
        and (c.source == source_start if exact else c.source.startswith(source_start))
    ]
    assert len(matches) == 1, f"{len(matches)} cells start with {source_start!r}"
    return matches[0]


def text(cell: Any, name: str = "stdout") -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == name)


def data(cell: Any, mime: str) -> list[Any]:
    return [o["data"][mime] for o in cell.outputs if "data" in o and mime in o["data"]]


async def test_quickstart_runs_top_to_bottom(
    base_env: dict[str, str],
    gateway_server: JupyterProcess,
    kernel_mock_anthropic: MockAnthropicServer,
    mock_anthropic_key: str,
    tmp_path: Path,
) -> None:
    nb = await run_notebook("quickstart.ipynb", gateway_server.kernel_env(base_env), tmp_path)

    ask = cell(nb, "job = %codex_async")
    assert "using the Jupyter server's gateway" in text(ask)
    assert len(data(ask, WIDGET_VIEW)) == 1
    assert len(data(cell(nb, "%%codex_async --out review"), WIDGET_VIEW)) == 1
    watched = text(cell(nb, "print(job.status")).split()
    assert watched[0] in {"queued", "running", "succeeded"}
    assert "job.status" in watched

    answer = data(cell(nb, "answer = job.result"), "text/plain")[-1]
    assert answer.startswith("echo: Explain in two sentences what a Python generator is.")
    fixed = text(cell(nb, "fixed = await review"))
    assert "echo: Find the bug" in fixed and "return sum(xs) / len(xs) + 1" in fixed, "{snippet}"
    waited = data(cell(nb, "%codex_async --wait"), "text/plain")[-1]
    assert waited.startswith("echo: Summarise the Zen of Python in one line.")
    forked = data(cell(nb, "%codex_fork --wait job"), "text/plain")[-1]
    assert forked.startswith("echo: Now explain it to a ten-year-old.")
    child = data(cell(nb, "child = job.fork"), "text/plain")[-1]
    assert child.startswith("echo: Give one short code example.")
    check_claude_section(nb, kernel_mock_anthropic, mock_anthropic_key)

    table = data(cell(nb, "%llm_jobs --limit 10"), "text/html")[0]
    assert table.count("<tr") >= 6 and "succeeded" in table
    assert data(cell(nb, "%llm_result {job.id}"), "text/plain")[-1] == answer
    assert data(cell(nb, "slow.cancel()"), "text/plain") == ["'cancelled'"]
    denied = cell(nb, "%codex_async --sandbox danger-full-access")
    assert "refused by policy: danger-full-access is not allowed here" in text(denied, "stderr")
    assert not data(denied, WIDGET_VIEW)
    assert not [o for o in nb_outputs(nb) if o.get("output_type") == "error"]


async def test_agents_runs_top_to_bottom(
    base_env: dict[str, str], gateway_server: JupyterProcess, tmp_path: Path
) -> None:
    # Under the server's root dir, as in Lab: grants' jobs work only there (grant_roots).
    assert gateway_server.root_dir is not None
    workdir = gateway_server.root_dir / tmp_path.name
    nb = await run_notebook("agents.ipynb", gateway_server.kernel_env(base_env), workdir)

    setup = cell(nb, "%load_ext llmgw_jupyter")
    mcp_url = f"{gateway_server.url}llmgw/mcp"
    assert text(setup).strip() == f"MCP endpoint: {mcp_url}"
    assert "token llmgw" in text(cell(nb, "policy = {"))

    snippets = data(cell(nb, "from IPython.display import Markdown"), "text/markdown")[0]
    for expected in (
        f"codex mcp add llmgw --url {mcp_url} --bearer-token-env-var LLMGW_GRANT_TOKEN",
        f'url = "{mcp_url}"',
        'bearer_token_env_var = "LLMGW_GRANT_TOKEN"',
        f"claude mcp add --transport http llmgw {mcp_url}",
        '"headers": {"Authorization": "Bearer ${LLMGW_GRANT_TOKEN}"}',
        f'streamable_http_client("{mcp_url}", http_client=http)',
    ):
        assert expected in snippets

    asked = text(cell(nb, "import httpx2"))
    assert (
        "the agent sees: ['codex_request_async', 'llm_job_status', 'llm_job_watch', "
        "'llm_job_result']" in asked
    )
    assert "waits for the owner's approval" in asked
    assert len(data(cell(nb, "agent_job = %llm_job"), WIDGET_VIEW)) == 1
    assert len(data(cell(nb, "%llm_approvals", exact=True), WIDGET_VIEW)) == 1
    assert "approved" in text(cell(nb, "%llm_approvals --approve"))
    collected = text(cell(nb, "after = 0"))
    assert collected.strip() == "succeeded - echo: List three uses of Python decorators."
    assert text(cell(nb, "rest.delete")).strip() == "the revoked token now gets: 401 Unauthorized"
    assert not [o for o in nb_outputs(nb) if o.get("output_type") == "error"]


def check_claude_section(nb: Any, anthropic: MockAnthropicServer, key: str) -> None:
    """The Claude Code cells ran the real CLI against the mock: answer, fork, usage and cost."""
    assert len(data(cell(nb, "claude_job = %claude_async"), WIDGET_VIEW)) == 1
    watched = cell(nb, "print(claude_job.status")
    assert text(watched).split()[0] in {"queued", "running", "succeeded"}
    prompt = "Explain in one sentence what a Python decorator is."
    assert data(watched, "text/plain")[-1].startswith(f"echo: {prompt}")
    forked = data(cell(nb, "%claude_fork --wait --out claude_child --last"), "text/plain")[-1]
    assert forked.startswith("echo: Now give a one-line example.")

    sessions = dict(
        line.split(": ", 1) for line in text(cell(nb, 'print("parent session:"')).splitlines()
    )
    assert re.fullmatch(UUID, sessions["parent session"]), sessions
    assert re.fullmatch(UUID, sessions["forked session"]), sessions
    assert sessions["forked session"] != sessions["parent session"]
    # The fork's model request carried the parent's turn before its own prompt.
    fork_request = anthropic.message_requests[-1]
    assert fork_request.user_texts == [prompt, "Now give a one-line example."]
    assert fork_request.headers["x-api-key"] == key

    usage = USAGE_LINE.match(text(cell(nb, "usage = claude_child.result().usage")).strip())
    assert usage is not None, text(cell(nb, "usage = claude_child.result().usage"))
    tokens_in, cached, tokens_out = (int(usage.group(n).replace(",", "")) for n in (1, 2, 3))
    assert tokens_in >= cached > 0 and tokens_out > 0
    assert float(usage.group(4)) > 0


def nb_outputs(nb: Any) -> list[Any]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]

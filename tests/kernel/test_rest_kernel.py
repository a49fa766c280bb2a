"""The magics against a real Jupyter server with the extension: the shared runtime over REST.

The server runs the fake CLI behind Codex's tools (``fake_gateway_server``): these tests are about
the kernel's side, any job will do, and no Codex is needed. Its ``[fake:...]`` knobs make jobs
slow or chatty. Only the embedded fallbacks run the real Codex, in the kernel.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from kernel_harness import WIDGET_VIEW, KernelHarness, connect_kernel, value

from llmgw_jupyter.kernel.handle import JOB_MIME
from llmgw_jupyter.testing.jupyter_process import JupyterProcess
from llmgw_jupyter.testing.mcp_agent import agent_session

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def gateway_server(fake_gateway_server: JupyterProcess) -> JupyterProcess:
    """The server of this module: the fake CLI behind Codex's tools."""
    return fake_gateway_server


@pytest.fixture
async def rest_kernel(
    kernel_factory: Any, kernel_env: dict[str, str], gateway_server: JupyterProcess, tmp_path: Path
) -> KernelHarness:
    harness: KernelHarness = await kernel_factory(gateway_server.kernel_env(kernel_env))
    await harness.execute(f"%load_ext llmgw_jupyter\nWORK = {str(tmp_path)!r}")
    return harness


async def test_a_kernel_started_by_the_server_uses_its_gateway_without_set_up(
    gateway_server: JupyterProcess, kernel_tmp: Path
) -> None:
    async with httpx.AsyncClient(headers=gateway_server.auth) as http:
        response = await http.post(gateway_server.url + "api/kernels", json={"name": "python3"})
        response.raise_for_status()
        kernel_id = response.json()["id"]
        connection = kernel_tmp / "runtime" / f"kernel-{kernel_id}.json"
        harness = await connect_kernel(connection)
        try:
            env = await harness.execute(
                "import os; print(os.environ['LLMGW_SERVER_URL']); "
                "print(os.environ['LLMGW_SERVER_TOKEN'][:7])"
            )
            assert env.stream().split() == [gateway_server.url, "llmgwk_"]
            run = await harness.execute(
                f"%load_ext llmgw_jupyter\n%codex_async --wait --out job --cd {kernel_tmp} From lab"
            )
            assert f"using the Jupyter server's gateway at {gateway_server.url}" in run.stream()
            assert run.data("text/plain")[-1].startswith("echo: From lab")
            job_id = await value(harness, "job.id")
            seen = await http.get(gateway_server.api_url + f"jobs/{job_id}")
            assert seen.json()["status"] == "succeeded", "the job lives in the server's runtime"
        finally:
            await harness.stop()
            await http.delete(gateway_server.url + f"api/kernels/{kernel_id}")


async def test_widget_follows_a_server_job_from_queued_to_the_answer(
    rest_kernel: KernelHarness, gateway_server: JupyterProcess
) -> None:
    run = await rest_kernel.execute(
        "job = %codex_async --cd {WORK} Over REST [fake:events=3,step_delay=0.4]"
    )
    assert "jobs outlive this kernel" in run.stream()
    assert len(run.data(WIDGET_VIEW)) == 1
    job_id = await value(rest_kernel, "job.id")
    widget = await rest_kernel.wait_status(job_id, {"succeeded"})
    history = rest_kernel.status_history(widget)
    assert history[0] == "queued" and "running" in history and history[-1] == "succeeded"
    answer = rest_kernel.child(widget, "llmgw-answer")
    value_html = await rest_kernel.wait_for(lambda: answer.state.get("value"), 10, "answer")
    assert "echo: Over REST" in value_html

    events = await value(rest_kernel, "[e for e in job.events if e['type'] == 'fake.progress']")
    view = rest_kernel.child(widget, "llmgw-events")
    delays = []
    for event in events:
        marker = f'data-seq="{event["seq"]}"'
        shown = next(t for t, update in view.history if marker in str(update.get("value")))
        delays.append(shown - datetime.fromisoformat(event["ts"]).timestamp())
    assert len(delays) == 3
    assert max(delays) < 0.75, f"event to widget delays over REST: {delays}"


async def test_a_kernel_restart_never_cancels_a_job_and_llm_job_reattaches(
    rest_kernel: KernelHarness, gateway_server: JupyterProcess
) -> None:
    await rest_kernel.execute("%codex_async --out slow --cd {WORK} Outlives [fake:delay=3]")
    job_id = await value(rest_kernel, "slow.id")
    await rest_kernel.wait_status(job_id, {"running"})

    await rest_kernel.restart()
    status = httpx.get(gateway_server.api_url + f"jobs/{job_id}", headers=gateway_server.auth)
    assert status.json()["status"] == "running", "the restart left the job alone"

    before = len(rest_kernel.widgets_with("llmgw-job"))
    run = await rest_kernel.execute(f"%load_ext llmgw_jupyter\nagain = %llm_job {job_id}")
    assert len(run.data(WIDGET_VIEW)) == 1
    await rest_kernel.wait_for(
        lambda: len(rest_kernel.widgets_with("llmgw-job")) > before, 10, "a new widget"
    )
    fresh = [w for w in rest_kernel.widgets_with("llmgw-job")][before:]
    header = rest_kernel.child(fresh[0], "llmgw-header")
    assert f"<code>{job_id}</code>" in header.state["value"]
    await rest_kernel.wait_for(
        lambda: rest_kernel.widget_status(fresh[0]) == "succeeded", 60, "the job to finish"
    )
    answer = await rest_kernel.execute("%llm_result again")
    assert answer.data("text/plain")[-1].startswith("echo: Outlives")


async def test_gateway_errors_over_rest_are_clear_messages(rest_kernel: KernelHarness) -> None:
    denied = await rest_kernel.execute(
        "%codex_async --sandbox danger-full-access --cd {WORK} Dangerous"
    )
    assert "llmgw: refused by policy: danger-full-access is not allowed here" in denied.stream(
        "stderr"
    )
    unknown = await rest_kernel.execute("%llm_job nosuchjob")
    assert "llmgw: not found: job nosuchjob not found" in unknown.stream("stderr")
    missing_dir = await rest_kernel.execute("%codex_async --cd /nonexistent/dir hello")
    assert re.search(r"llmgw: invalid_input: .*working_dir", missing_dir.stream("stderr"))


async def test_an_unreachable_server_falls_back_to_the_embedded_gateway(
    kernel_factory: Any, base_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **base_env,
        "LLMGW_SERVER_URL": "http://127.0.0.1:9/",
        "LLMGW_SERVER_TOKEN": "x",
        "LLMGW_DATA_DIR": str(tmp_path / "data"),
    }
    kernel: KernelHarness = await kernel_factory(env)
    run = await kernel.execute(
        f"%load_ext llmgw_jupyter\n%codex_async --wait --quiet --cd {tmp_path} Fallback"
    )
    assert "the gateway server at http://127.0.0.1:9/ is not usable" in run.stream()
    assert "using an embedded gateway in this process" in run.stream()
    assert run.data("text/plain")[-1].startswith("echo: Fallback")


async def test_embedded_gateway_moves_aside_when_the_server_holds_the_data_dir(
    kernel_factory: Any, base_env: dict[str, str], gateway_server: JupyterProcess, tmp_path: Path
) -> None:
    env = {**base_env, "LLMGW_DATA_DIR": str(gateway_server.data_dir)}
    kernel: KernelHarness = await kernel_factory(env)
    run = await kernel.execute(
        f"%load_ext llmgw_jupyter\n%codex_async --wait --quiet --cd {tmp_path} Aside"
    )
    text = run.stream()
    assert f"{gateway_server.data_dir} is in use by a running gateway server" in text
    match = re.search(r"data in (\S+);", text)
    assert match is not None and match.group(1) != str(gateway_server.data_dir)
    assert Path(match.group(1)).name.startswith(gateway_server.data_dir.name + "-kernel-")
    assert run.data("text/plain")[-1].startswith("echo: Aside")


async def test_outputs_say_the_job_lives_in_the_server(rest_kernel: KernelHarness) -> None:
    run = await rest_kernel.execute("job = %codex_async --cd {WORK} Served")
    job_id = await value(rest_kernel, "job.id")
    assert run.data(JOB_MIME) == [{"version": 1, "job_id": job_id, "via": "server"}]
    assert run.data("text/markdown") and run.data("text/html")


APPROVAL_POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {"codex_request_async": {"action": "require_approval", "approval": {"timeout": 600}}},
}


async def test_llm_approvals_follows_a_decision_made_over_rest(
    rest_kernel: KernelHarness, gateway_server: JupyterProcess
) -> None:
    async with httpx.AsyncClient(
        base_url=gateway_server.api_url, headers=gateway_server.auth, timeout=30
    ) as rest:
        created = await rest.post("grants", json={"name": "rest-bot", "policy": APPROVAL_POLICY})
        assert created.status_code == 201, created.text
        async with agent_session(gateway_server.mcp_url, created.json()["token"], 30.0) as agent:
            result = await agent.call_tool("codex_request_async", {"prompt": "Decide over REST"})
        assert result.structured_content is not None, result.content
        job_id = result.structured_content["job"]["id"]
        approval_id = result.structured_content["approval"]["id"]

        listing = await rest_kernel.execute("%llm_approvals")
        assert len(listing.data(WIDGET_VIEW)) == 1
        item = next(
            item
            for item in rest_kernel.widgets_with("llmgw-approval-item")
            if approval_id in str(rest_kernel.child(item, "llmgw-approval-row").state["value"])
        )
        text = rest_kernel.child(item, "llmgw-approval-row")
        assert "requested by grant:rest-bot" in text.state["value"]
        assert re.search(r"expires in \d+ min", text.state["value"])

        approved = await rest.post(f"approvals/{approval_id}/approve", json={})
        assert approved.status_code == 200, approved.text
        await rest_kernel.wait_for(
            lambda: "approved by owner" in str(text.state["value"]), 30, "the row updated"
        )
        layout_of = {
            name: rest_kernel.models[
                str(rest_kernel.child(item, name).state["layout"]).removeprefix("IPY_MODEL_")
            ]
            for name in ("llmgw-approve", "llmgw-deny")
        }
        assert all(layout.state.get("display") == "none" for layout in layout_of.values())
        status = (await rest.get(f"jobs/{job_id}")).json()["status"]
        assert status in ("queued", "running", "succeeded")

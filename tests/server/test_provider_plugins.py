"""A second CLI plugged into a real Jupyter server by configuration alone: the fake provider's
tools over MCP, on a machine where no Codex binary is reachable."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest

from llmgw_jupyter.testing.jupyter_process import JupyterProcess, start_jupyter
from llmgw_jupyter.testing.mcp_agent import agent_session

WAIT = 60.0
CONFIG = """\
c.LLMGatewayApp.providers = {
    "fake": {"class": "llmgw_jupyter.testing.fake_provider:FakeProvider"}
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    workdir = tmp_path_factory.mktemp("plugins")
    config_dir = workdir / "jupyter-config"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.py").write_text(CONFIG)
    # PATH holds the interpreter's dir and the system's, none of which has a codex.
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    assert shutil.which("codex", path=path) is None
    missing = str(workdir / "no-codex")
    jupyter = start_jupyter(
        workdir, data_dir=workdir / "llmgw-data", codex_path=missing, env={"PATH": path}
    )
    yield jupyter
    jupyter.stop()


def structured(result: types.CallToolResult) -> dict[str, Any]:
    assert result.is_error is False, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


async def test_a_configured_provider_serves_its_tools_over_mcp(server: JupyterProcess) -> None:
    async with agent_session(server.mcp_url, server.token, WAIT) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert {"fake_request", "fake_request_async", "fake_fork_session"} <= set(tools)
        assert "codex_request_async" in tools  # the installed provider is still there
        assert "sandbox" not in tools["fake_request_async"].input_schema["properties"]

        submitted = structured(
            await session.call_tool(
                "fake_request_async", {"prompt": "hello over mcp [fake:events=2]"}
            )
        )
        job_id = submitted["job"]["id"]
        assert submitted["job"]["provider"] == "fake"
        after, job = 0, submitted["job"]
        for _ in range(20):  # each watch waits for the job's next events (or its end)
            watched = structured(
                await session.call_tool(
                    "llm_job_watch", {"job_id": job_id, "after_seq": after, "timeout_seconds": 10}
                )
            )
            after, job = watched["next_after_seq"], watched["job"]
            if watched["done"]:
                break
        assert job["status"] == "succeeded", job
        result = structured(await session.call_tool("llm_job_result", {"job_id": job_id}))
        assert result["final_message"] == "echo: hello over mcp"

        forked = structured(
            await session.call_tool(
                "fake_fork_session", {"session_id": result["session_id"], "prompt": "again"}
            )
        )
        assert forked["job"]["kind"] == "fork"

        refused = await session.call_tool("codex_request_async", {"prompt": "x"})
        assert refused.is_error is True
        assert refused.meta is not None
        assert refused.meta["llmgw/error"]["category"] == "spawn_error"
        assert "Codex CLI not found" in refused.meta["llmgw/error"]["message"]

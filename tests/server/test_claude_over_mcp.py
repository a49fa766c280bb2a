"""Claude Code's tools over MCP on a real Jupyter server: built from the registry (no tool code of
its own), running the real CLI 2.1.328 against the mock Anthropic API inside the boundary."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest

from llmgw_jupyter.testing.jupyter_process import JupyterProcess, start_jupyter
from llmgw_jupyter.testing.mcp_agent import agent_session
from llmgw_jupyter.testing.mock_anthropic import MockAnthropicServer

ROOT = Path(__file__).resolve().parents[2]
CLAUDE = Path(os.environ.get("LLMGW_CLAUDE_PATH") or ROOT / ".claude-cli/node_modules/.bin/claude")
WAIT = 90.0
KEY = "sk-ant-server-key-3e09"

pytestmark = pytest.mark.skipif(
    not os.access(CLAUDE, os.X_OK),
    reason=f"Claude Code CLI not installed at {CLAUDE}: run scripts/bootstrap.sh "
    "(npm install --prefix .claude-cli @anthropic-ai/claude-code@2.1.328)",
)


@pytest.fixture(scope="module")
def mock() -> Iterator[MockAnthropicServer]:
    with MockAnthropicServer() as server:
        yield server


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, mock: MockAnthropicServer
) -> Iterator[JupyterProcess]:
    workdir = tmp_path_factory.mktemp("claude-mcp")
    config_dir = workdir / "jupyter-config"
    config_dir.mkdir()
    providers = {"claude": {"path": str(CLAUDE), "options": {"base_url": mock.base_url}}}
    (config_dir / "jupyter_server_config.py").write_text(
        f"c.LLMGatewayApp.providers = {providers!r}\n"
    )
    jupyter = start_jupyter(
        workdir,
        data_dir=workdir / "llmgw-data",
        codex_path=str(workdir / "no-codex"),
        env={"ANTHROPIC_API_KEY": KEY},
    )
    yield jupyter
    jupyter.stop()


def structured(result: types.CallToolResult) -> dict[str, Any]:
    assert result.is_error is False, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


async def test_claude_tools_run_fork_and_refuse_over_mcp(
    server: JupyterProcess, mock: MockAnthropicServer
) -> None:
    async with agent_session(server.mcp_url, server.token, WAIT) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert {"claude_request", "claude_request_async", "claude_fork_session"} <= set(tools)
        properties = tools["claude_request_async"].input_schema["properties"]
        assert {"permission_mode", "allowed_tools", "max_turns"} <= set(properties)
        assert "sandbox" not in properties and "config_overrides" not in properties
        modes = properties["permission_mode"]["enum"]
        assert "acceptEdits" in modes and "bypassPermissions" not in modes

        answered = structured(
            await session.call_tool(
                "claude_request", {"prompt": "remember beta", "wait_seconds": WAIT}
            )
        )
        assert answered["done"] is True, answered
        assert answered["final_message"] == "echo: remember beta"
        assert answered["job"]["provider"] == "claude"
        assert answered["usage"]["output_tokens"] > 0
        parent = answered["session_id"]
        assert mock.message_requests[-1].headers["x-api-key"] == KEY

        forked = structured(
            await session.call_tool(
                "claude_fork_session", {"last": True, "prompt": "and now? [mock:history]"}
            )
        )
        job_id = forked["job"]["id"]
        assert forked["job"]["kind"] == "fork"
        after, job = 0, forked["job"]
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
        assert result["final_message"] == "user turns: 2: remember beta | and now? [mock:history]"
        assert result["session_id"] != parent

        refused = await session.call_tool(
            "claude_request_async", {"prompt": "x", "permission_mode": "bypassPermissions"}
        )
        assert refused.is_error is True and refused.meta is not None
        assert refused.meta["llmgw/error"]["category"] == "invalid_input"
        assert refused.meta["llmgw/error"]["field"] == "permission_mode"

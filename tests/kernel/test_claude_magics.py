"""``%claude_async`` and ``%claude_fork`` in a real kernel, against a real Jupyter server whose
gateway runs the real Claude Code CLI 2.1.328 against the mock Anthropic API. The magics come
from the provider registry: no magic code of Claude's own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kernel_harness import KernelHarness, value

from llmgw_jupyter.testing.jupyter_process import JupyterProcess, start_jupyter
from llmgw_jupyter.testing.mock_anthropic import MockAnthropicServer

ROOT = Path(__file__).resolve().parents[2]
CLAUDE = Path(os.environ.get("LLMGW_CLAUDE_PATH") or ROOT / ".claude-cli/node_modules/.bin/claude")

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not os.access(CLAUDE, os.X_OK),
        reason=f"Claude Code CLI not installed at {CLAUDE}: run scripts/bootstrap.sh "
        "(npm install --prefix .claude-cli @anthropic-ai/claude-code@2.1.328)",
    ),
]


@pytest.fixture(scope="module")
def anthropic() -> Iterator[MockAnthropicServer]:
    with MockAnthropicServer() as server:
        yield server


@pytest.fixture(scope="module")
def claude_server(
    kernel_env: dict[str, str], kernel_tmp: Path, anthropic: MockAnthropicServer
) -> Iterator[JupyterProcess]:
    """A server whose gateway runs Claude Code (config dir of its own, the kernels' other dirs)."""
    workdir = kernel_tmp / "claude-server"
    config_dir = workdir / "jupyter-config-claude"
    config_dir.mkdir(parents=True)
    providers = {"claude": {"path": str(CLAUDE), "options": {"base_url": anthropic.base_url}}}
    (config_dir / "jupyter_server_config.py").write_text(
        f"c.LLMGatewayApp.providers = {providers!r}\n"
    )
    server = start_jupyter(
        workdir,
        data_dir=kernel_tmp / "claude-server-data",
        codex_path=str(workdir / "no-codex"),
        env={
            **kernel_env,
            "JUPYTER_CONFIG_DIR": str(config_dir),
            "ANTHROPIC_API_KEY": "sk-ant-magic-test",
        },
    )
    yield server
    server.stop()


async def test_claude_async_and_claude_fork_run_the_real_cli_from_a_kernel(
    kernel_factory: Any,
    kernel_env: dict[str, str],
    claude_server: JupyterProcess,
    tmp_path: Path,
) -> None:
    kernel: KernelHarness = await kernel_factory(claude_server.kernel_env(kernel_env))
    await kernel.execute(f"%load_ext llmgw_jupyter\nWORK = {str(tmp_path)!r}")

    run = await kernel.execute(
        "%claude_async --wait --out job --cd {WORK} --allowed-tools Bash --max-turns 3 "
        "[mock-shell]echo from-a-magic[/mock-shell]"
    )
    assert run.error is None, run.error
    assert run.data("text/plain")[-1].startswith("shell output: from-a-magic"), run.outputs
    job = await value(kernel, "{'provider': job.job['provider'], 'args': job.job['args']}")
    assert job["provider"] == "claude"
    assert job["args"]["allowed_tools"] == ["Bash"] and job["args"]["max_turns"] == 3

    fork = await kernel.execute(
        "%claude_fork --wait --out forked --cd {WORK} --last and now? [mock:history]"
    )
    assert fork.error is None, fork.error
    answer = fork.data("text/plain")[-1].splitlines()[0]
    assert answer == (
        "user turns: 2: [mock-shell]echo from-a-magic[/mock-shell] | and now? [mock:history]"
    )

    refused = await kernel.execute(
        "%claude_async --permission-mode bypassPermissions x", allow_error=True
    )
    assert "invalid choice: 'bypassPermissions'" in refused.stream("stderr")

"""Kernel test fixtures: the mock models, kernels, Jupyter servers with the extension.

``kernel_env`` needs no Codex; ``fake_env`` adds the fake CLI behind Codex's tools for embedded
gateways whose tests need any job (``LLMGW_PROVIDERS``); ``base_env`` adds the real Codex for
embedded gateways whose tests are about Codex. ``fake_gateway_server`` runs the fake CLI behind
Codex's tools (for tests over REST where any job will do); ``gateway_server`` runs the real Codex
and the real Claude Code, both against local mocks.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kernel_harness import KernelHarness, loaded_kernel, start_kernel

from llmgw_jupyter.testing import codex_home as _codex_home
from llmgw_jupyter.testing import fake_cli
from llmgw_jupyter.testing.jupyter_process import JupyterProcess, start_jupyter
from llmgw_jupyter.testing.mock_anthropic import MockAnthropicServer
from llmgw_jupyter.testing.mock_responses import MockResponsesServer

REPO = Path(__file__).resolve().parents[2]
# The owner policy of these tests is the notebooks' example: all allowed but danger-full-access.
OWNER_POLICY_FILE = REPO / "notebooks" / "owner-policy.example.json"
CLAUDE = Path(os.environ.get("LLMGW_CLAUDE_PATH") or REPO / ".claude-cli/node_modules/.bin/claude")
# The key Claude jobs of ``gateway_server`` send to the mock (a dummy: the mock checks none).
MOCK_ANTHROPIC_KEY = "sk-ant-kernel-tests-dummy"
FAKE_CODEX_CONFIG = """\
c.LLMGatewayApp.providers = {{
    "codex": {{
        "class": "llmgw_jupyter.testing.fake_provider:FakeCodexProvider",
        "path": {script!r},
        "home": {home!r},
    }}
}}
"""


@pytest.fixture(scope="module")
def kernel_mock_model() -> Iterator[MockResponsesServer]:
    """One mock model for all kernels of a module (kernels outlive a function fixture)."""
    with MockResponsesServer() as server:
        yield server


@pytest.fixture(scope="module")
def kernel_mock_anthropic() -> Iterator[MockAnthropicServer]:
    """One mock Anthropic API for the Claude Code jobs of a module's servers."""
    with MockAnthropicServer() as server:
        yield server


@pytest.fixture(scope="module")
def mock_anthropic_key() -> str:
    return MOCK_ANTHROPIC_KEY


@pytest.fixture(scope="module")
def module_claude_path() -> str:
    """The real Claude Code CLI (``scripts/bootstrap.sh`` installs it next to Codex)."""
    if not os.access(CLAUDE, os.X_OK):
        pytest.fail(
            f"Claude Code CLI not found at {CLAUDE}: run scripts/bootstrap.sh "
            "(npm install --prefix .claude-cli @anthropic-ai/claude-code@2.1.328)"
        )
    return str(CLAUDE)


@pytest.fixture(scope="module")
def kernel_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kernel")


@pytest.fixture(scope="module")
def kernel_codex_home(kernel_tmp: Path, kernel_mock_model: MockResponsesServer) -> Path:
    return _codex_home.write_codex_home(kernel_tmp / "codex-home", kernel_mock_model.base_url)


@pytest.fixture(scope="module")
def module_codex_path() -> str:
    path = _codex_home.find_codex_for_tests()
    if path is None and _codex_home.codex_hidden():
        pytest.skip("needs the real Codex CLI")
    if path is None:
        pytest.fail("Codex CLI not found: see README.md (npm install --prefix .codex-cli ...)")
    return path


@pytest.fixture(scope="module")
def owner_policy_file() -> Path:
    return OWNER_POLICY_FILE


@pytest.fixture(scope="module")
def kernel_env(
    kernel_tmp: Path, kernel_codex_home: Path, owner_policy_file: Path
) -> dict[str, str]:
    """Environment of every kernel and server here: the mock model, no gateway server, and no
    Codex (kernels reach a server's gateway over REST)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLMGW_", "JUPYTER_")) and k != "CODEX_HOME"
    }
    env.update(
        CODEX_HOME=str(kernel_codex_home),
        LLMGW_POLICY=str(owner_policy_file),
        JUPYTER_RUNTIME_DIR=str(kernel_tmp / "runtime"),
        JUPYTER_DATA_DIR=str(kernel_tmp / "jupyter-data"),
        JUPYTER_CONFIG_DIR=str(kernel_tmp / "jupyter-config"),
        IPYTHONDIR=str(kernel_tmp / "ipython"),
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    return env


@pytest.fixture(scope="module")
def fake_env(kernel_env: dict[str, str], kernel_tmp: Path) -> dict[str, str]:
    """``kernel_env`` plus the fake CLI behind Codex's tools in the kernel's embedded gateway:
    jobs (knobs ``[fake:...]``, answers ``echo: <prompt>``, events ``fake.*``) without Codex."""
    providers = {
        "codex": {
            "class": "llmgw_jupyter.testing.fake_provider:FakeCodexProvider",
            "path": fake_cli.__file__,
            "home": str(kernel_tmp / "fake-kernel-home"),
        }
    }
    return {**kernel_env, "LLMGW_PROVIDERS": json.dumps(providers)}


@pytest.fixture(scope="module")
def base_env(kernel_env: dict[str, str], module_codex_path: str) -> dict[str, str]:
    """``kernel_env`` plus the real Codex, for embedded gateways that run jobs."""
    return {**kernel_env, "LLMGW_CODEX_PATH": module_codex_path}


@pytest.fixture
async def kernel_factory(
    kernel_tmp: Path,
) -> AsyncIterator[Callable[[dict[str, str]], Any]]:
    """Start kernels with a given environment; all are shut down at the end of the test."""
    started: list[KernelHarness] = []

    async def start(env: dict[str, str]) -> KernelHarness:
        work = kernel_tmp / "work"
        work.mkdir(exist_ok=True)
        harness = await start_kernel(env, work)
        started.append(harness)
        return harness

    yield start
    for harness in started:
        await harness.stop()


@pytest.fixture(scope="module")
def gateway_server(
    base_env: dict[str, str],
    kernel_tmp: Path,
    kernel_codex_home: Path,
    module_codex_path: str,
    module_claude_path: str,
    kernel_mock_anthropic: MockAnthropicServer,
) -> Iterator[JupyterProcess]:
    """A Jupyter server with the extension, sharing the kernels' Jupyter dirs (``base_env``).

    Codex reaches the mock model through ``kernel_codex_home``; Claude Code reaches the mock
    Anthropic API through the provider's ``base_url`` option, with a dummy key.
    """
    providers = {
        "claude": {
            "path": module_claude_path,
            "options": {"base_url": kernel_mock_anthropic.base_url},
        }
    }
    server = start_jupyter(
        kernel_tmp / "server",
        data_dir=kernel_tmp / "server-data",
        codex_path=module_codex_path,
        codex_home=kernel_codex_home,
        args=[f"--LLMGatewayApp.providers={providers!r}"],
        env={**base_env, "ANTHROPIC_API_KEY": MOCK_ANTHROPIC_KEY},
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fake_gateway_server(kernel_env: dict[str, str], kernel_tmp: Path) -> Iterator[JupyterProcess]:
    """A Jupyter server whose jobs run the fake CLI behind Codex's tools: no Codex needed.

    It shares the kernels' runtime and data dirs (``kernel_env``) but has a config dir of its own
    (the provider configuration), so a ``gateway_server`` beside it still runs the real Codex.
    """
    workdir = kernel_tmp / "fake-server"
    config_dir = workdir / "jupyter-config-fake"
    config_dir.mkdir(parents=True)
    (config_dir / "jupyter_server_config.py").write_text(
        FAKE_CODEX_CONFIG.format(script=fake_cli.__file__, home=str(workdir / "fake-home"))
    )
    server = start_jupyter(
        workdir,
        data_dir=kernel_tmp / "fake-server-data",
        codex_path=str(workdir / "no-codex"),
        env={**kernel_env, "JUPYTER_CONFIG_DIR": str(config_dir)},
    )
    yield server
    server.stop()


@pytest.fixture
def kernel_setup() -> list[str]:
    """Cells a module's ``kernel`` and ``codex_kernel`` run after loading the magics (a module
    overrides this fixture)."""
    return []


@pytest.fixture
async def kernel(
    kernel_factory: Any, fake_env: dict[str, str], tmp_path: Path, kernel_setup: list[str]
) -> KernelHarness:
    """A kernel whose embedded gateway runs the fake CLI behind Codex's tools: any job will do
    (no Codex needed)."""
    return await loaded_kernel(kernel_factory, fake_env, tmp_path, kernel_setup)


@pytest.fixture
async def codex_kernel(
    kernel_factory: Any, base_env: dict[str, str], tmp_path: Path, kernel_setup: list[str]
) -> KernelHarness:
    """A kernel whose embedded gateway runs the real Codex against the mock model."""
    return await loaded_kernel(kernel_factory, base_env, tmp_path, kernel_setup)

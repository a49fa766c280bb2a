"""Shared fixtures: a mock Responses API, a CODEX_HOME pointing at it, and the real Codex CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmgw_jupyter.testing import codex_home as _codex_home
from llmgw_jupyter.testing.mock_responses import MockResponsesServer


@pytest.fixture
def mock_model() -> Iterator[MockResponsesServer]:
    """A started mock of the OpenAI Responses API, fresh (empty log, default behaviour) per test."""
    with MockResponsesServer() as server:
        yield server


@pytest.fixture
def codex_home(tmp_path: Path, mock_model: MockResponsesServer) -> Path:
    """A private CODEX_HOME whose config.toml points Codex at ``mock_model``."""
    return _codex_home.write_codex_home(tmp_path / "codex-home", mock_model.base_url)


@pytest.fixture
def codex_env(codex_home: Path) -> dict[str, str]:
    """The full environment for running codex against ``codex_home``."""
    return _codex_home.codex_env(codex_home)


@pytest.fixture(scope="session")
def codex_path() -> str:
    """Path to the real Codex CLI; fails (never skips) when it is not installed."""
    path = _codex_home.find_codex_for_tests()
    if path is None:
        pytest.fail(
            "Codex CLI not found: install it with the test command in README.md "
            "(npm install --prefix .codex-cli @openai/codex@0.169.0) "
            "or set LLMGW_CODEX_PATH to an executable codex",
            pytrace=False,
        )
    return path

"""Shared fixtures: a mock Responses API, a CODEX_HOME pointing at it, and the real Codex CLI.

Every test that needs the real Codex gets it from ``codex_path`` (or the kernel tests'
``module_codex_path``) and is marked ``codex`` automatically, so ``pytest -m "not codex"`` runs
the rest. ``LLMGW_TEST_WITHOUT_CODEX=1`` runs the suite as on a machine without Codex: no
repo-local copy, no ``$LLMGW_CODEX_PATH``, no codex on ``PATH``; tests needing it skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmgw_jupyter.testing import codex_home as _codex_home
from llmgw_jupyter.testing.mock_responses import MockResponsesServer

NEEDS_CODEX = "needs the real Codex CLI"
# Fixtures that hand a test the real Codex: a test using one (directly or through another
# fixture) exercises Codex and is marked ``codex``.
CODEX_FIXTURES = frozenset({"codex_path", "module_codex_path"})


def _hide_codex_from_processes() -> None:
    """Servers and CLIs started by tests look for codex too: take it out of their reach."""
    os.environ.pop("LLMGW_CODEX_PATH", None)
    kept = [
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and shutil.which("codex", path=entry) is None
    ]
    os.environ["PATH"] = os.pathsep.join(kept)


def pytest_configure(config: pytest.Config) -> None:
    if _codex_home.codex_hidden():
        _hide_codex_from_processes()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if CODEX_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.codex)


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
    """Path to the real Codex CLI; fails when it is not installed (skips when that is simulated)."""
    path = _codex_home.find_codex_for_tests()
    if path is None and _codex_home.codex_hidden():
        pytest.skip(NEEDS_CODEX)
    if path is None:
        pytest.fail(
            "Codex CLI not found: install it with the test command in README.md "
            "(npm install --prefix .codex-cli @openai/codex@0.169.0) "
            "or set LLMGW_CODEX_PATH to an executable codex",
            pytrace=False,
        )
    return path

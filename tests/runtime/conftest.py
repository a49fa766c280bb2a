"""Runtime fixtures: a factory of started runtimes (closed after each test) and fake CLIs.

``echo_provider`` is the shared test CLI (``llmgw_jupyter.testing``): for jobs that only need to
run and answer. ``fakes`` writes scripts for what it cannot show (gates, crashes, floods, stubborn
children, start-order logs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from runtime_fakes import fake_env
from runtime_helpers import Fakes, RuntimeFactory

from llmgw_jupyter.runtime import Runtime, RuntimeConfig
from llmgw_jupyter.testing.fake_provider import FakeProvider


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[RuntimeFactory]:
    """``rt = await runtime(**RuntimeConfig fields)``: started on ``tmp_path/data`` by default."""
    made: list[Runtime] = []

    async def make(**config: Any) -> Runtime:
        config.setdefault("data_dir", tmp_path / "data")
        # The fakes report host pids that the fault tests signal and check: owner jobs run
        # unisolated here; tests/runtime/test_isolation.py covers the boundary.
        config.setdefault("isolation", "off")
        rt = Runtime(RuntimeConfig(**config))
        await rt.start()
        made.append(rt)
        return rt

    yield make
    for rt in reversed(made):
        await rt.close(cancel_running=True)


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    """Fake CLIs written into the test's tmp dir, sharing one gate file and one log file."""
    directory = tmp_path / "fakes"
    directory.mkdir()
    return Fakes(directory, fake_env(directory))


@pytest.fixture
def echo_provider() -> FakeProvider:
    """The shared fake CLI: answers ``echo: <prompt>`` at once (knobs: see ``fake_cli``)."""
    return FakeProvider()


@pytest.fixture
async def codex_runtime(runtime: RuntimeFactory, codex_path: str, codex_home: Path) -> Runtime:
    """A runtime running the real Codex CLI against the mock model."""
    return await runtime(codex_path=codex_path, codex_home=str(codex_home))

"""Fixtures: a started Gateway over a Runtime running the real Codex CLI against the mock model,
and a variant with a fake Codex for jobs that must hang or be many and instant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tools.gateway_harness import Harness, open_gateway


@pytest.fixture
async def gateway(tmp_path: Path, codex_path: str, codex_home: Path) -> AsyncIterator[Harness]:
    """Runtime (real Codex, mock model, tmp data dir) + started Gateway; closed at teardown."""
    async with open_gateway(tmp_path, codex_path=codex_path, codex_home=codex_home) as harness:
        yield harness


@pytest.fixture
async def fake_gateway(tmp_path: Path) -> AsyncIterator[Harness]:
    """The same over a fake Codex (``llmgw_jupyter.testing.fake_provider.FakeCodexProvider``)."""
    async with open_gateway(tmp_path, fake=True) as harness:
        yield harness

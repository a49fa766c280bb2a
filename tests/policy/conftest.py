"""Shared fixtures: a fresh store on disk and a controllable clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmgw_jupyter.policy import PolicyEngine
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.policy import PolicyStore


class FakeClock:
    """A clock tests move by hand, so window edges are exact and nothing sleeps."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "store.sqlite")
    yield database
    database.close()


@pytest.fixture
def store(db: Database) -> PolicyStore:
    return PolicyStore(db)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(store: PolicyStore, clock: FakeClock) -> PolicyEngine:
    return PolicyEngine(store, clock=clock)

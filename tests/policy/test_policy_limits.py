"""Rate limits: exact under concurrency, sliding across window edges, durable, releasable."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmgw_jupyter.policy import PolicyEngine, load_policy
from llmgw_jupyter.policy.limits import counter_key
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.limits import LimitCheck
from llmgw_jupyter.store.policy import PolicyStore


def limited(max_calls: int, window: Any = "minute", scope: str = "grant") -> Any:
    limit = {"counter": "c", "window": window, "max": max_calls, "scope": scope}
    return load_policy({"version": "1", "tools": {"t": {"limits": [limit]}}})


def test_exact_under_many_threads(engine: PolicyEngine) -> None:
    policy = limited(10)
    start = threading.Barrier(16)

    def worker() -> int:
        start.wait(timeout=30)
        return sum(engine.decide(policy, "t", {}, "grant:g").allowed for _ in range(50))

    with ThreadPoolExecutor(16) as pool:
        admitted = sum(pool.map(lambda _: worker(), range(16)))
    assert admitted == 10


def test_exact_across_connections_to_one_file(tmp_path: Path, clock: Any) -> None:
    """Separate connections (as separate processes would have) still admit exactly max."""
    databases = [Database(tmp_path / "shared.sqlite") for _ in range(4)]
    try:
        engines = [PolicyEngine(PolicyStore(d), clock=clock) for d in databases]
        policy = limited(10, scope="global")
        start = threading.Barrier(8)

        def worker(index: int) -> int:
            engine = engines[index % len(engines)]
            start.wait(timeout=30)
            return sum(engine.decide(policy, "t", {}, f"grant:{index}").allowed for _ in range(25))

        with ThreadPoolExecutor(8) as pool:
            admitted = sum(pool.map(worker, range(8)))
        assert admitted == 10
    finally:
        for database in databases:
            database.close()


async def test_exact_under_many_asyncio_tasks(engine: PolicyEngine) -> None:
    policy = limited(10)
    go = asyncio.Event()

    async def in_thread() -> bool:
        await go.wait()
        return (await asyncio.to_thread(engine.decide, policy, "t", {}, "grant:g")).allowed

    async def on_loop() -> bool:
        await go.wait()
        await asyncio.sleep(0)
        return engine.decide(policy, "t", {}, "grant:g").allowed

    tasks = [asyncio.create_task(in_thread() if i % 2 else on_loop()) for i in range(200)]
    go.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    assert sum(results) == 10


def test_no_double_burst_across_a_window_edge(engine: PolicyEngine, clock: Any) -> None:
    """A fixed-window counter would admit 10 at 0:59.9 and 10 more at 1:00.1; we must not."""
    policy = limited(10, window="minute")
    clock.now = 59.9
    assert all(engine.decide(policy, "t", {}, "g").allowed for _ in range(10))
    clock.now = 60.1
    refused = engine.decide(policy, "t", {}, "g")
    assert refused.denied
    assert refused.retry_after_seconds == pytest.approx(59.8)
    clock.now = 119.8
    assert engine.decide(policy, "t", {}, "g").denied
    clock.now = 59.9 + 60.0  # the burst leaves the window exactly now: room for 10 again
    assert all(engine.decide(policy, "t", {}, "g").allowed for _ in range(10))
    assert engine.decide(policy, "t", {}, "g").denied


def test_retry_after_is_from_the_oldest_hit_in_the_window(engine: PolicyEngine, clock: Any) -> None:
    policy = limited(3, window=10)
    for offset in (0.0, 2.0, 5.0):
        clock.now = 100.0 + offset
        assert engine.decide(policy, "t", {}, "g").allowed
    clock.now = 107.0
    assert engine.decide(policy, "t", {}, "g").retry_after_seconds == pytest.approx(3.0)
    clock.now = 110.0
    assert engine.decide(policy, "t", {}, "g").allowed
    clock.now = 111.0  # window now holds 102, 105, 110: wait for 102 to leave
    assert engine.decide(policy, "t", {}, "g").retry_after_seconds == pytest.approx(1.0)


def test_counters_survive_a_new_database_on_the_same_file(tmp_path: Path, clock: Any) -> None:
    policy = limited(3)
    first = Database(tmp_path / "s.sqlite")
    assert all(
        PolicyEngine(PolicyStore(first), clock=clock).decide(policy, "t", {}, "g").allowed
        for _ in range(2)
    )
    first.close()
    second = Database(tmp_path / "s.sqlite")
    try:
        reloaded = limited(3)  # a policy reload does not reset counters either
        engine = PolicyEngine(PolicyStore(second), clock=clock)
        assert engine.decide(reloaded, "t", {}, "g").allowed
        assert engine.decide(reloaded, "t", {}, "g").denied
    finally:
        second.close()


def test_release_gives_the_reservation_back(engine: PolicyEngine, store: PolicyStore) -> None:
    policy = limited(1)
    first = engine.decide(policy, "t", {}, "g")
    assert first.allowed and engine.decide(policy, "t", {}, "g").denied
    assert engine.release(first) == 1
    second = engine.decide(policy, "t", {}, "g")
    assert second.allowed
    assert engine.release(list(second.reservation)) == 1  # ids work too (e.g. from an approval)
    assert store.count_hits(counter_key("c", "grant", "g"), 0.0) == 0


def test_refused_calls_are_not_counted(engine: PolicyEngine, clock: Any) -> None:
    policy = limited(2, window=10)
    clock.now = 0.0
    assert engine.decide(policy, "t", {}, "g").allowed
    assert engine.decide(policy, "t", {}, "g").allowed
    for step in range(1, 10):  # hammering while full must not push the reopening back
        clock.now = float(step)
        assert engine.decide(policy, "t", {}, "g").denied
    clock.now = 10.0
    assert engine.decide(policy, "t", {}, "g").allowed


def test_prune_keeps_what_the_longest_window_needs(store: PolicyStore) -> None:
    short = LimitCheck("k", 10.0, 100)
    long = LimitCheck("k", 1000.0, 100)
    now = 0.0
    store.acquire([long], lambda: now)
    now = 500.0
    store.acquire([short], lambda: now)
    assert store.prune_hits(600.0) == 0  # the 1000 s window still needs the hit at 0
    assert store.prune_hits(1000.0) == 1
    assert store.count_hits("k", -1.0) == 1


def test_engine_prunes_old_hits(store: PolicyStore, clock: Any) -> None:
    engine = PolicyEngine(store, clock=clock, prune_interval=30.0)
    policy = limited(5, window=10)
    engine.decide(policy, "t", {}, "g")
    clock.advance(31.0)
    engine.decide(policy, "t", {}, "g")
    assert store.count_hits(counter_key("c", "grant", "g"), 0.0) == 1


def test_all_or_nothing_across_limits(store: PolicyStore) -> None:
    checks = [LimitCheck("a", 60.0, 5), LimitCheck("b", 60.0, 1)]
    assert store.acquire(checks, lambda: 1.0).admitted
    refused = store.acquire(checks, lambda: 2.0)
    assert not refused.admitted and refused.blocked == (1,) and refused.hit_ids == ()
    assert store.count_hits("a", 0.0) == 1


def reference(times: list[int], window: int, max_calls: int) -> list[int]:
    """The rule in plain Python: admit when fewer than max hits are newer than now - window."""
    admitted: list[int] = []
    for now in times:
        if sum(1 for t in admitted if t > now - window) < max_calls:
            admitted.append(now)
    return admitted


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    times=st.lists(st.integers(min_value=0, max_value=300), max_size=60),
    window=st.integers(min_value=1, max_value=60),
    max_calls=st.integers(min_value=1, max_value=5),
    ordered=st.booleans(),
)
def test_property_never_more_than_max_in_any_window(
    times: list[int], window: int, max_calls: int, ordered: bool
) -> None:
    if ordered:
        times = sorted(times)
    database = Database(":memory:")
    try:
        store = PolicyStore(database)
        check = [LimitCheck("k", float(window), max_calls)]
        admitted = [now for now in times if store.acquire(check, partial(float, now)).admitted]
    finally:
        database.close()
    # Any interval [start, start + window) holds at most max hits; the worst ones start at a hit.
    for start in admitted:
        assert sum(1 for t in admitted if start <= t < start + window) <= max_calls
    assert admitted == reference(times, window, max_calls)
    if ordered:  # with a forward clock nothing is refused that would fit
        assert len(admitted) >= min(len(times), max_calls)

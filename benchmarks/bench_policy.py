"""Cost of one policy decision with a 50-tool policy, against a call with no policy, in one run.

Run: ``.venv/bin/python benchmarks/bench_policy.py [--calls N] [--charges N] [--check]``.
Targets: median decision under 0.2 ms without a counter and under 1 ms with a durable
(SQLite, WAL, on disk) rate-limit counter. ``--check`` exits 1 when a target is missed.

Budget admission (issue 13): a call that starts a job on a tool with a ``tokens`` and a
``cost_usd`` budget, each holding ``--charges`` charge rows in its window (jobs charged twice
each, as a running job is), against the same job-starting call on a tool with a call-count
limit (at its steady state of about ``max`` hits in the window). The two alternate in blocks
in one process; target: the budget's median within 2x of the call-count limit's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmgw_jupyter.policy import PolicyEngine, load_policy
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.policy import PolicyStore

TARGET_NO_COUNTER_MS = 0.2
TARGET_COUNTER_MS = 1.0
TARGET_BUDGET_RATIO = 2.0
BLOCK = 100  # calls per block when two scenarios alternate
ARGS: dict[str, Any] = {
    "prompt": "Refactor the parser and add tests.",
    "model": "gpt-5-codex",
    "sandbox": "workspace-write",
    "timeout_seconds": 300,
}


def fifty_tool_policy() -> dict[str, Any]:
    """50 tools with realistic rules; ``tool_00`` has no limit, ``tool_01`` a durable one."""
    tools: dict[str, Any] = {}
    for i in range(50):
        tools[f"tool_{i:02d}"] = {
            "require": ["args.prompt"],
            "deny_if": [
                {"path": "args.sandbox", "op": "eq", "value": "danger-full-access"},
                {"path": "args.prompt", "op": "regex", "value": r"(?i)rm\s+-rf\s+/"},
            ],
            "arg_rules": [
                {"path": "args.model", "op": "in", "value": ["gpt-5", "gpt-5-codex", "o3"]},
                {"path": "args.timeout_seconds", "op": "lte", "value": 3600},
                {"path": "args.prompt", "op": "max_length", "value": 100_000},
            ],
        }
    tools["tool_01"]["limits"] = [
        {"counter": "bench_rate", "window": "minute", "max": 100, "scope": "grant"}
    ]
    tools["tool_02"]["limits"] = [
        {"counter": "bench_jobs", "window": "minute", "max": 100, "scope": "grant"}
    ]
    tools["tool_03"]["limits"] = [
        {"counter": "bench_tokens", "window": "day", "measure": "tokens", "max": 10**12},
        {"counter": "bench_usd", "window": "day", "measure": "cost_usd", "max": 1e9},
    ]
    return {"version": "1", "default": "deny", "hide": ["tool_49"], "tools": tools}


def measure(call: Callable[[], object], calls: int) -> list[float]:
    """Per-call wall time in milliseconds (after a short warm-up)."""
    for _ in range(min(200, calls)):
        call()
    timings = []
    perf = time.perf_counter_ns
    for _ in range(calls):
        start = perf()
        call()
        timings.append((perf() - start) / 1e6)
    return timings


def measure_alternating(
    calls: dict[str, Callable[[], object]], count: int
) -> dict[str, list[float]]:
    """Per-call wall time of each scenario, the scenarios taking turns in blocks of ``BLOCK``
    calls so that both see the same machine (warm-up: one block each)."""
    timings: dict[str, list[float]] = {name: [] for name in calls}
    perf = time.perf_counter_ns
    for call in calls.values():
        for _ in range(BLOCK):
            call()
    for _ in range(max(1, count // BLOCK)):
        for name, call in calls.items():
            into = timings[name]
            for _ in range(BLOCK):
                start = perf()
                call()
                into.append((perf() - start) / 1e6)
    return timings


def summary(timings: list[float]) -> tuple[float, float]:
    ordered = sorted(timings)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


class SteppingClock:
    """Wall clock plus a step per reading, so every call is admitted with a full window.

    Each call moves time forward by window/max, so the log always holds about ``max`` hits: the
    steady state of a caller running at its limit (the expensive case for the counter query).
    """

    def __init__(self, step: float) -> None:
        self.now = time.time()
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def seed_charges(store: PolicyStore, engine: PolicyEngine, policy: Any, rows: int) -> None:
    """``rows`` charges per budget of ``tool_03``, spread over the last hour: jobs admitted
    through the engine, each charged twice (while running, then settled)."""
    now = time.time()
    for job in range(max(1, rows // 2)):
        decision = engine.decide(policy, "tool_03", ARGS, "grant:bench", starts_job=True)
        assert decision.allowed and len(decision.budgets) == 2, decision
        job_id = f"seed-{job}"
        store.attach_budgets(job_id, decision.budgets)
        ts = now - 3600 + 3600 * job / max(1, rows // 2)
        store.charge_job(job_id, 5000, 0.01, now=ts)
        store.charge_job(job_id, 9000, 0.02, final=True, now=ts + 1)


def run_budgets(calls: int, charges: int) -> dict[str, tuple[float, float]]:
    """Budget admission against a call-count limit, both on job-starting calls, same run."""
    policy = load_policy(fifty_tool_policy())
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp) / "bench.sqlite")
        try:
            store = PolicyStore(db)
            limit_engine = PolicyEngine(store, clock=SteppingClock(60.0 / 100 * 1.001))
            budget_engine = PolicyEngine(store)
            seed_charges(store, budget_engine, policy, charges)

            def starting(engine: PolicyEngine, tool: str) -> Callable[[], object]:
                def call() -> object:
                    decision = engine.decide(policy, tool, ARGS, "grant:bench", starts_job=True)
                    assert decision.allowed, decision
                    return decision

                return call

            timings = measure_alternating(
                {
                    "job start, call-count limit": starting(limit_engine, "tool_02"),
                    "job start, tokens + usd budget": starting(budget_engine, "tool_03"),
                },
                calls,
            )
        finally:
            db.close()
    return {name: summary(values) for name, values in timings.items()}


def run(calls: int) -> dict[str, tuple[float, float]]:
    policy = load_policy(fifty_tool_policy())
    results: dict[str, tuple[float, float]] = {}

    def no_policy_call(tool: str, args: dict[str, Any], caller: str) -> dict[str, Any]:
        return args

    results["baseline: same call, no policy"] = summary(
        measure(lambda: no_policy_call("tool_00", ARGS, "grant:bench"), calls)
    )
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp) / "bench.sqlite")
        try:
            engine = PolicyEngine(PolicyStore(db), clock=SteppingClock(60.0 / 100 * 1.001))

            def decide(tool: str) -> Callable[[], object]:
                def call() -> object:
                    decision = engine.decide(policy, tool, ARGS, "grant:bench")
                    assert decision.allowed, decision
                    return decision

                return call

            results["decision, no counter"] = summary(measure(decide("tool_00"), calls))
            results["decision, durable counter"] = summary(
                measure(decide("tool_01"), max(1000, calls // 4))
            )
        finally:
            db.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument(
        "--charges", type=int, default=1000, help="charge rows per budget in the window"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    options = parser.parse_args(argv)
    results = run(options.calls)
    budget_calls = max(1000, options.calls // 4)
    budgets = run_budgets(budget_calls, options.charges)
    print(f"policy decision, 50-tool policy ({options.calls} calls per scenario)")
    print(f"{'scenario':34} {'median ms':>10} {'p95 ms':>10}")
    for name, (median, p95) in results.items():
        print(f"{name:34} {median:10.4f} {p95:10.4f}")
    no_counter = results["decision, no counter"][0]
    counter = results["decision, durable counter"][0]
    met_plain = no_counter < TARGET_NO_COUNTER_MS
    met_counter = counter < TARGET_COUNTER_MS
    print(
        f"targets: no counter < {TARGET_NO_COUNTER_MS} ms ({'met' if met_plain else 'MISSED'}), "
        f"durable counter < {TARGET_COUNTER_MS} ms ({'met' if met_counter else 'MISSED'})"
    )
    print(
        f"\nbudget admission, {options.charges} charge rows per budget in the window "
        f"({budget_calls} calls per scenario, alternating in blocks of {BLOCK})"
    )
    print(f"{'scenario':34} {'median ms':>10} {'p95 ms':>10}")
    for name, (median, p95) in budgets.items():
        print(f"{name:34} {median:10.4f} {p95:10.4f}")
    limit_median = budgets["job start, call-count limit"][0]
    budget_median = budgets["job start, tokens + usd budget"][0]
    ratio = budget_median / limit_median
    met_budget = ratio <= TARGET_BUDGET_RATIO
    print(
        f"target: budget admission within {TARGET_BUDGET_RATIO:g}x of a call-count limit: "
        f"{ratio:.2f}x ({'met' if met_budget else 'MISSED'})"
    )
    ok = met_plain and met_counter and met_budget
    return 1 if options.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())

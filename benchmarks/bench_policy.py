"""Cost of one policy decision with a 50-tool policy, against a call with no policy, in one run.

Run: ``.venv/bin/python benchmarks/bench_policy.py [--calls N] [--check]``.
Targets: median decision under 0.2 ms without a counter and under 1 ms with a durable
(SQLite, WAL, on disk) rate-limit counter. ``--check`` exits 1 when a target is missed.
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
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    options = parser.parse_args(argv)
    results = run(options.calls)
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
    ok = met_plain and met_counter
    return 1 if options.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())

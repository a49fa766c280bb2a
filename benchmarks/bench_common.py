"""What the runtime benchmarks share: a provider running a fixed argv, timed raw spawns, and
alternating measurements so every variant sees the same machine noise.

Imported by sibling scripts run as ``python benchmarks/<name>.py`` (their directory is on
``sys.path``).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from llmgw_jupyter.errors import InvalidInputError
from llmgw_jupyter.providers.base import Command, StreamParser
from llmgw_jupyter.runtime import JobSpec, JobStatus, Runtime

Measure = Callable[[], Awaitable[float]]
WARM_UP_ROUNDS = 20  # imports, SQLite pages, the child watcher


class FixedArgvProvider:
    """A Provider (llmgw_jupyter.providers.base) running a fixed argv and nothing else, read by
    a real CLI's parser: the runtime's own cost for that CLI's stream."""

    def __init__(self, name: str, argv: list[str], new_parser: Callable[[], StreamParser]) -> None:
        self.name = name
        self.argv = argv
        self._new_parser = new_parser

    def check_ready(self) -> None:
        return None

    def validate(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(args.get("prompt"), str):
            raise InvalidInputError("prompt", "a string is required")
        return dict(args)

    def build_command(
        self, kind: str, args: dict[str, Any], job_dir: Path, context: Any = None
    ) -> Command:
        return Command(argv=list(self.argv), stdin=args["prompt"].encode(), cwd=None)

    def protected_paths(self) -> list[str]:
        return []

    def new_parser(self) -> StreamParser:
        return self._new_parser()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def raw_spawn(argv: list[str], prompt: bytes, lines: int) -> float:
    """Seconds for ``subprocess.run`` of ``argv`` (prompt on stdin, both pipes captured)."""
    begun = time.perf_counter()
    done = subprocess.run(argv, input=prompt, capture_output=True, check=True)
    elapsed = time.perf_counter() - begun
    assert done.stdout.count(b"\n") == lines
    return elapsed


async def alternate(measures: Mapping[str, Measure], rounds: int) -> dict[str, float]:
    """Run every measure once per round, in order, after a warm-up: ``<name>_median``,
    ``<name>_p95`` (seconds) and ``<name>_cpu`` (event-loop thread CPU per run)."""
    for _ in range(WARM_UP_ROUNDS):
        for measure in measures.values():
            await measure()
    times: dict[str, list[float]] = {name: [] for name in measures}
    cpu = dict.fromkeys(measures, 0.0)
    for _ in range(rounds):
        for name, measure in measures.items():
            begun = time.thread_time()
            times[name].append(await measure())
            cpu[name] += time.thread_time() - begun
    result: dict[str, float] = {}
    for name, values in times.items():
        result[f"{name}_median"] = statistics.median(values)
        result[f"{name}_p95"] = pct(values, 0.95)
        result[f"{name}_cpu"] = cpu[name] / rounds
    return result


def add_difference(figures: dict[str, float], minuend: str, subtrahend: str, name: str) -> None:
    """``<name>_median`` and ``<name>_p95``: what ``minuend`` takes more than ``subtrahend``."""
    for stat in ("median", "p95"):
        figures[f"{name}_{stat}"] = figures[f"{minuend}_{stat}"] - figures[f"{subtrahend}_{stat}"]


def print_timings(ms: Mapping[str, float], rows: Sequence[tuple[str, str]]) -> None:
    """One ``label  median  p95`` line per (label, key) row, figures in milliseconds."""
    for label, key in rows:
        print(f"  {label:20} median {ms[key + '_median']:6.2f} ms   p95 {ms[key + '_p95']:6.2f} ms")


def machine_line(setting: str) -> str:
    """Python version, CPUs and load: what a reader needs to compare two runs."""
    load = ", ".join(f"{x:.1f}" for x in psutil.getloadavg())
    return f"python {sys.version.split()[0]}, {psutil.cpu_count()} cpus, load {load}, {setting}"


async def concurrent(rt: Runtime, specs: list[JobSpec]) -> dict[str, float]:
    """Submit every spec at once and wait for all: how many succeeded, distinct ids, jobs/s."""
    begun = time.perf_counter()
    jobs = await asyncio.gather(*(rt.submit(spec) for spec in specs))
    done = await asyncio.gather(*(rt.wait_finished(job.id, 120) for job in jobs))
    elapsed = time.perf_counter() - begun
    return {
        "submitted": len(specs),
        "succeeded": sum(1 for d in done if d.status is JobStatus.SUCCEEDED),
        "distinct": len({d.id for d in done}),
        "seconds": elapsed,
        "jobs_per_second": len(specs) / elapsed,
    }

"""What the gateway costs per Claude Code job: overhead per job and throughput (issue 13).

Run: ``.venv/bin/python benchmarks/bench_claude.py [--rounds 200] [--jobs 100]``. Prints figures
and the targets; it is a measurement, not a test (it never fails on a missed target).

The CLI is a fake as cheap as a process can be: ``/bin/sh -c printf`` of the three lines of a
real successful ``claude -p --output-format stream-json --verbose`` run (``system``/``init``,
an ``assistant`` message, a ``result`` with usage and cost), as captured in
``tests/fixtures/claude/success.jsonl``. It runs through the real runtime with the real
``ClaudeProvider``: its argument validation, its per-caller config dir and ``settings.json``
written before every run, its environment, and its stream-json parser; only the argv it builds
is swapped for the fake's. The baseline spawns the very same argv with ``subprocess.run``
(prompt on stdin, both pipes captured) in the same process, alternating with the gateway's jobs,
so the difference is what the gateway adds for a Claude job.

A third variant, alternating with the two, runs the same argv through the runtime with Claude's
parser but a bare provider (no validation model, no config dir, no ``settings.json``): the gap
between it and the real provider is what ``ClaudeProvider`` itself adds per run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from llmgw_jupyter.errors import InvalidInputError
from llmgw_jupyter.providers.base import Command, LaunchContext
from llmgw_jupyter.providers.claude import ClaudeProvider, ClaudeStreamParser
from llmgw_jupyter.runtime import JobSpec, JobStatus, Runtime, RuntimeConfig

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "claude" / "success.jsonl"
TARGET_OVERHEAD_MS = 3.0  # the Codex runtime's target (issue 2), held for Claude (issue 13)
TARGET_JOBS_PER_SECOND = 200.0


def claude_lines() -> list[str]:
    """The captured run, one JSON object per line, re-encoded compactly."""
    lines = [json.dumps(json.loads(x)) for x in FIXTURE.read_text().splitlines() if x.strip()]
    kinds = [json.loads(line)["type"] for line in lines]
    assert kinds == ["system", "assistant", "result"], kinds
    return lines


LINES = claude_lines()
FINAL_MESSAGE = json.loads(LINES[-1])["result"]
FAKE_ARGV = ["/bin/sh", "-c", "printf '%s\\n' " + " ".join(shlex.quote(x) for x in LINES)]


class FakeClaudeProvider(ClaudeProvider):
    """The real Claude provider (validation, config dir, settings, env, parser) whose command
    runs the fake instead of ``claude``."""

    def __init__(self) -> None:
        super().__init__("/bin/sh", command_sandbox=False)

    def build_command(
        self, kind: str, args: dict[str, Any], job_dir: Path, context: LaunchContext
    ) -> Command:
        command = super().build_command(kind, args, job_dir, context)
        return dataclasses.replace(command, argv=list(FAKE_ARGV))


class BareClaudeProvider:
    """A Provider (llmgw_jupyter.providers.base) running the fake with Claude's parser and
    nothing else: the runtime's own cost for a Claude stream."""

    name = "bare"

    def check_ready(self) -> None:
        return None

    def validate(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(args.get("prompt"), str):
            raise InvalidInputError("prompt", "a string is required")
        return dict(args)

    def build_command(
        self, kind: str, args: dict[str, Any], job_dir: Path, context: LaunchContext
    ) -> Command:
        return Command(argv=list(FAKE_ARGV), stdin=args["prompt"].encode(), cwd=None)

    def protected_paths(self) -> list[str]:
        return []

    def new_parser(self) -> ClaudeStreamParser:
        return ClaudeStreamParser()


def spec(prompt: str = "benchmark prompt", provider: str = "claude") -> JobSpec:
    return JobSpec(provider, "claude_request_async", "exec", {"prompt": prompt})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def raw_spawn(prompt: bytes) -> float:
    begun = time.perf_counter()
    done = subprocess.run(FAKE_ARGV, input=prompt, capture_output=True, check=True)
    elapsed = time.perf_counter() - begun
    assert done.stdout.count(b"\n") == len(LINES)
    return elapsed


async def gateway_job(rt: Runtime, provider: str = "claude") -> float:
    begun = time.perf_counter()
    job = await rt.submit(spec(provider=provider))
    done = await rt.wait_finished(job.id, 30)
    elapsed = time.perf_counter() - begun
    assert done.status is JobStatus.SUCCEEDED, (done.status, done.error_message)
    assert done.final_message == FINAL_MESSAGE, done.final_message
    assert done.usage.cost_usd is not None and done.usage.cost_usd > 0, done.usage
    return elapsed


async def overhead(rt: Runtime, rounds: int) -> dict[str, float]:
    """Alternate raw spawns and gateway jobs so both see the same machine noise."""
    for _ in range(20):  # warm up: imports, SQLite pages, the child watcher
        raw_spawn(b"warm up")
        await gateway_job(rt)
        await gateway_job(rt, "bare")
    raw: list[float] = []
    gateway: list[float] = []
    bare: list[float] = []
    raw_cpu = gateway_cpu = 0.0
    for _ in range(rounds):
        cpu = time.thread_time()
        raw.append(raw_spawn(b"benchmark prompt"))
        raw_cpu += time.thread_time() - cpu
        cpu = time.thread_time()
        gateway.append(await gateway_job(rt))
        gateway_cpu += time.thread_time() - cpu
        bare.append(await gateway_job(rt, "bare"))
    return {
        "bare_median": statistics.median(bare),
        "bare_p95": pct(bare, 0.95),
        "raw_cpu": raw_cpu / rounds,
        "gateway_cpu": gateway_cpu / rounds,
        "raw_median": statistics.median(raw),
        "raw_p95": pct(raw, 0.95),
        "gateway_median": statistics.median(gateway),
        "gateway_p95": pct(gateway, 0.95),
        "overhead_median": statistics.median(gateway) - statistics.median(raw),
        "overhead_p95": pct(gateway, 0.95) - pct(raw, 0.95),
    }


async def concurrent(rt: Runtime, count: int) -> dict[str, float]:
    begun = time.perf_counter()
    jobs = await asyncio.gather(*(rt.submit(spec(prompt=f"job {i}")) for i in range(count)))
    done = await asyncio.gather(*(rt.wait_finished(job.id, 120) for job in jobs))
    elapsed = time.perf_counter() - begun
    succeeded = sum(1 for d in done if d.status is JobStatus.SUCCEEDED)
    return {
        "submitted": count,
        "succeeded": succeeded,
        "distinct": len({d.id for d in done}),
        "seconds": elapsed,
        "jobs_per_second": count / elapsed,
    }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="llmgw-bench-claude-") as data_dir:
        config = RuntimeConfig(
            data_dir=data_dir,
            isolation=args.isolation,
            max_running=args.max_running,
            max_queued=max(args.jobs, 64),
            providers={"claude": FakeClaudeProvider(), "bare": BareClaudeProvider()},
        )
        rt = Runtime(config)
        await rt.start()
        try:
            load = ", ".join(f"{x:.1f}" for x in psutil.getloadavg())
            print(f"python {sys.version.split()[0]}, {psutil.cpu_count()} cpus, load {load},"
                  f" isolation {args.isolation}")  # fmt: skip
            o = await overhead(rt, args.rounds)
            ms = {key: value * 1e3 for key, value in o.items()}
            print(f"\nper Claude job, {args.rounds} sequential jobs (submit -> result in hand):")
            for label, key in (("raw subprocess.run", "raw"), ("gateway job", "gateway"),
                               ("gateway overhead", "overhead")):  # fmt: skip
                print(f"  {label:20} median {ms[key + '_median']:6.2f} ms"
                      f"   p95 {ms[key + '_p95']:6.2f} ms")  # fmt: skip
            print(f"  bare provider job    median {ms['bare_median']:6.2f} ms"
                  f"   p95 {ms['bare_p95']:6.2f} ms   (Claude's parser, no ClaudeProvider work)"
                  f"\n  of which ClaudeProvider per run (median): "
                  f"{ms['gateway_median'] - ms['bare_median']:.2f} ms")  # fmt: skip
            print(f"  event-loop CPU/job   gateway {ms['gateway_cpu']:5.2f} ms,"
                  f" raw {ms['raw_cpu']:.2f} ms")  # fmt: skip
            met = ms["overhead_median"] < TARGET_OVERHEAD_MS
            print(f"  target: median overhead < {TARGET_OVERHEAD_MS:g} ms (as for Codex):"
                  f" {'met' if met else 'MISSED'}")  # fmt: skip

            c = await concurrent(rt, args.jobs)
            all_ok = c["succeeded"] == c["submitted"] == c["distinct"]
            fast = c["jobs_per_second"] >= TARGET_JOBS_PER_SECOND
            print(f"\n{args.jobs} concurrent Claude jobs (max_running={args.max_running}):")
            print(f"  succeeded {c['succeeded']:.0f}/{c['submitted']:.0f}, distinct ids"
                  f" {c['distinct']:.0f}, in {c['seconds']:.2f} s = {c['jobs_per_second']:.0f}"
                  f" jobs/s   (target: all, >= {TARGET_JOBS_PER_SECOND:g} jobs/s as for Codex:"
                  f" {'met' if all_ok and fast else 'MISSED'})")  # fmt: skip
        finally:
            await rt.close(cancel_running=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=200, help="sequential jobs for overhead")
    parser.add_argument("--jobs", type=int, default=100, help="concurrent submissions")
    parser.add_argument("--max-running", type=int, default=8)
    parser.add_argument(
        "--isolation",
        choices=["off", "bwrap"],
        default="off",
        help="run the jobs inside the bubblewrap boundary (its cost: compare both runs)",
    )
    asyncio.run(main(parser.parse_args()))

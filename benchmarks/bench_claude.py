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
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_common
from bench_common import FixedArgvProvider, concurrent

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


TIMING_ROWS = (
    ("raw subprocess.run", "raw"),
    ("gateway job", "gateway"),
    ("gateway overhead", "overhead"),
)


def spec(prompt: str = "benchmark prompt", provider: str = "claude") -> JobSpec:
    return JobSpec(provider, "claude_request_async", "exec", {"prompt": prompt})


def raw_spawn(prompt: bytes) -> float:
    return bench_common.raw_spawn(FAKE_ARGV, prompt, len(LINES))


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
    """Alternate raw spawns, gateway jobs and bare jobs so all see the same machine noise."""

    async def raw() -> float:
        return raw_spawn(b"benchmark prompt")

    figures = await bench_common.alternate(
        {"raw": raw, "gateway": lambda: gateway_job(rt), "bare": lambda: gateway_job(rt, "bare")},
        rounds,
    )
    bench_common.add_difference(figures, "gateway", "raw", "overhead")
    return figures


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="llmgw-bench-claude-") as data_dir:
        config = RuntimeConfig(
            data_dir=data_dir,
            isolation=args.isolation,
            max_running=args.max_running,
            max_queued=max(args.jobs, 64),
            providers={
                "claude": FakeClaudeProvider(),
                "bare": FixedArgvProvider("bare", FAKE_ARGV, ClaudeStreamParser),
            },
        )
        rt = Runtime(config)
        await rt.start()
        try:
            print(bench_common.machine_line(f"isolation {args.isolation}"))
            o = await overhead(rt, args.rounds)
            ms = {key: value * 1e3 for key, value in o.items()}
            print(f"\nper Claude job, {args.rounds} sequential jobs (submit -> result in hand):")
            bench_common.print_timings(ms, TIMING_ROWS)
            print(f"  bare provider job    median {ms['bare_median']:6.2f} ms"
                  f"   p95 {ms['bare_p95']:6.2f} ms   (Claude's parser, no ClaudeProvider work)"
                  f"\n  of which ClaudeProvider per run (median): "
                  f"{ms['gateway_median'] - ms['bare_median']:.2f} ms")  # fmt: skip
            print(f"  event-loop CPU/job   gateway {ms['gateway_cpu']:5.2f} ms,"
                  f" raw {ms['raw_cpu']:.2f} ms")  # fmt: skip
            met = ms["overhead_median"] < TARGET_OVERHEAD_MS
            print(f"  target: median overhead < {TARGET_OVERHEAD_MS:g} ms (as for Codex):"
                  f" {'met' if met else 'MISSED'}")  # fmt: skip

            c = await concurrent(rt, [spec(prompt=f"job {i}") for i in range(args.jobs)])
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

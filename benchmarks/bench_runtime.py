"""The job runtime's own cost: overhead per job, throughput, and memory growth.

Run: ``.venv/bin/python benchmarks/bench_runtime.py [--jobs 200] [--big-mb 50]``. Prints figures
and the issue's targets; it is a measurement, not a test (it never fails on a missed target).

The CLI is a fake that is as cheap as a process can be: ``/bin/sh -c printf`` of the four
JSONL lines a successful ``codex exec --json`` prints. The baseline spawns the very same argv
with ``subprocess.run`` (prompt on stdin, both pipes captured) in the same process and run, so
the difference is what the gateway adds: validation, SQLite rows and events, output files,
parsing, scheduling and wake-ups.

``--cli codex`` runs the same four lines through the real ``CodexProvider`` instead (a fake
``codex`` script that reads its prompt and prints them, as ``bench_server.py``'s): its
validation, home and command line as well, which is what the server's jobs cost; with
``--isolation bwrap`` (the server's default for the owner's jobs) it is the server's own setup.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shlex
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import bench_common
import psutil
from bench_common import FixedArgvProvider

from llmgw_jupyter.providers.base import Provider
from llmgw_jupyter.providers.codex import CodexProvider, CodexStreamParser
from llmgw_jupyter.runtime import JobSpec, JobStatus, Runtime, RuntimeConfig

MiB = 1024 * 1024
CODEX_LINES = [
    {"type": "thread.started", "thread_id": "01a1fd8b-40ef-75f0-a90e-545a02dcc899"},
    {"type": "turn.started"},
    {"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": "ok"}},
    {
        "type": "turn.completed",
        "usage": {
            "input_tokens": 9521,
            "cached_input_tokens": 4760,
            "output_tokens": 5,
            "reasoning_output_tokens": 0,
        },
    },
]


def printf_argv(lines: list[str], prefix: str = "") -> list[str]:
    quoted = " ".join(shlex.quote(line) for line in lines)
    return ["/bin/sh", "-c", f"{prefix}printf '%s\\n' {quoted}"]


INSTANT_ARGV = printf_argv([json.dumps(line) for line in CODEX_LINES])


def write_fake_codex(directory: Path) -> Path:
    """A ``codex`` stand-in for the real provider: reads the prompt, prints the four lines."""
    script = directory / "fake-codex"
    lines = " ".join(shlex.quote(json.dumps(line)) for line in CODEX_LINES)
    script.write_text(f"#!/bin/sh\ncat >/dev/null\nprintf '%s\\n' {lines}\n")
    script.chmod(0o755)
    return script


def big_argv(total_bytes: int) -> list[str]:
    """Prints ``total_bytes`` of 1 KB reasoning items, then a completed turn."""
    item = {"type": "item.completed", "item": {"type": "reasoning", "text": "x" * 940}}
    line = json.dumps(item)
    count = total_bytes // (len(line) + 1)
    flood = f"yes {shlex.quote(line)} | head -n {count}; "
    return printf_argv([json.dumps(line) for line in CODEX_LINES], prefix=flood)


WORKING_DIR: dict[str, str] = {}  # the codex CLI's working dir (--cli codex), set by main


def spec(provider: str = "instant", prompt: str = "benchmark prompt") -> JobSpec:
    return JobSpec(provider, "codex_request_async", "exec", {"prompt": prompt, **WORKING_DIR})


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def raw_spawn(prompt: bytes, argv: list[str] = INSTANT_ARGV) -> float:
    return bench_common.raw_spawn(argv, prompt, len(CODEX_LINES))


async def gateway_job(rt: Runtime) -> float:
    begun = time.perf_counter()
    job = await rt.submit(spec())
    done = await rt.wait_finished(job.id, 30)
    elapsed = time.perf_counter() - begun
    assert done.status is JobStatus.SUCCEEDED, (done.status, done.error_message)
    assert done.final_message == "ok"
    return elapsed


async def overhead(rt: Runtime, rounds: int, raw_argv: list[str]) -> dict[str, float]:
    """Alternate raw spawns and gateway jobs so both see the same machine noise."""

    async def raw() -> float:
        return raw_spawn(b"benchmark prompt", raw_argv)

    figures = await bench_common.alternate({"raw": raw, "gateway": lambda: gateway_job(rt)}, rounds)
    bench_common.add_difference(figures, "gateway", "raw", "overhead")
    return figures


async def executor_overhead(local: Runtime, other: Runtime, rounds: int) -> dict[str, float]:
    """Alternate jobs on the local executor and on another one (same machine noise for both)."""
    figures = await bench_common.alternate(
        {"local": lambda: gateway_job(local), "other": lambda: gateway_job(other)}, rounds
    )
    bench_common.add_difference(figures, "other", "local", "added")
    return figures


async def compare_executors(config: RuntimeConfig, rt: Runtime, rounds: int) -> None:
    """Per job: the configured executor against the local one, in the same run."""
    with tempfile.TemporaryDirectory(prefix="llmgw-bench-local-") as local_dir:
        local = Runtime(replace(config, data_dir=local_dir, executor="local"))
        await local.start()
        try:
            e = await executor_overhead(local, rt, rounds)
        finally:
            await local.close(cancel_running=True)
    ms = {key: value * 1e3 for key, value in e.items()}
    name = config.executor
    print(f"\nper job, {rounds} sequential jobs alternating executors (submit -> result):")
    bench_common.print_timings(
        ms, (("local executor", "local"), (f"{name} executor", "other"), (f"{name} adds", "added"))
    )
    print(f"  event-loop CPU/job   local {ms['local_cpu']:5.2f} ms,"
          f" {name} {ms['other_cpu']:.2f} ms")  # fmt: skip
    print(f"  target: {name} adds no more than 1 ms per job")


async def concurrent(rt: Runtime, count: int) -> dict[str, float]:
    """``bench_common.concurrent`` plus the gateway's RSS growth over the burst."""
    before = rss()
    figures = await bench_common.concurrent(rt, [spec(prompt=f"job {i}") for i in range(count)])
    figures["rss_growth_mib"] = (rss() - before) / MiB
    return figures


async def big_job(rt: Runtime, total_bytes: int) -> dict[str, float]:
    """Peak RSS while one job streams ``total_bytes`` through the gateway (sampled every 5 ms)."""
    before = rss()
    peak = before
    job = await rt.submit(spec(provider="big"))
    finished = asyncio.ensure_future(rt.wait_finished(job.id, 300))
    begun = time.perf_counter()
    me = psutil.Process()
    while not finished.done():
        peak = max(peak, me.memory_info().rss)
        await asyncio.wait([finished], timeout=0.005)
    elapsed = time.perf_counter() - begun
    done = finished.result()
    assert done.status is JobStatus.SUCCEEDED, (done.status, done.error_message)
    return {
        "stdout_mb": done.stdout_bytes / 1e6,
        "seconds": elapsed,
        "mb_per_second": done.stdout_bytes / 1e6 / elapsed,
        "peak_rss_growth_mib": (peak - before) / MiB,
        "end_rss_growth_mib": (rss() - before) / MiB,
        "events_stored": float(done.last_seq),
    }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="llmgw-bench-") as data_dir:
        big_bytes = int(args.big_mb * 1e6)
        instant: Provider = FixedArgvProvider("instant", INSTANT_ARGV, CodexStreamParser)
        raw_argv = INSTANT_ARGV
        if args.cli == "codex":
            cli_dir = Path(data_dir) / "cli"
            (cli_dir / "home").mkdir(parents=True)
            (cli_dir / "work").mkdir()
            script = write_fake_codex(cli_dir)
            instant = CodexProvider(str(script), codex_home=str(cli_dir / "home"))
            raw_argv = [str(script)]
            WORKING_DIR["working_dir"] = str(cli_dir / "work")
        config = RuntimeConfig(
            data_dir=str(Path(data_dir) / "data"),
            isolation=args.isolation,
            executor=args.executor,
            max_running=args.max_running,
            max_queued=max(args.jobs, 64),
            output_cap_bytes=big_bytes + 10 * MiB,
            providers={
                "instant": instant,
                "big": FixedArgvProvider("big", big_argv(big_bytes), CodexStreamParser),
            },
        )
        rt = Runtime(config)
        await rt.start()
        try:
            print(
                bench_common.machine_line(
                    f"executor {args.executor}, isolation {args.isolation}, cli {args.cli}"
                )
            )
            o = await overhead(rt, args.rounds, raw_argv)
            ms = {key: value * 1e3 for key, value in o.items()}
            print(f"\nper job, {args.rounds} sequential jobs (submit -> result in hand):")
            bench_common.print_timings(
                ms,
                (
                    ("raw subprocess.run", "raw"),
                    ("gateway job", "gateway"),
                    ("gateway overhead", "overhead"),
                ),
            )
            print(f"  event-loop CPU/job   gateway {ms['gateway_cpu']:5.2f} ms,"
                  f" raw {ms['raw_cpu']:.2f} ms")  # fmt: skip
            print("  target: median overhead < 3 ms")
            if args.executor != "local":
                await compare_executors(config, rt, args.rounds)

            c = await concurrent(rt, args.jobs)
            print(f"\n{args.jobs} concurrent submissions (max_running={args.max_running}):")
            print(f"  succeeded {c['succeeded']:.0f}/{c['submitted']:.0f}, distinct ids"
                  f" {c['distinct']:.0f}, in {c['seconds']:.2f} s = {c['jobs_per_second']:.0f}"
                  " jobs/s   (target: all, >= 200 jobs/s)")  # fmt: skip
            print(f"  gateway RSS growth {c['rss_growth_mib']:.1f} MiB   (target: < 20 MiB)")

            b = await big_job(rt, big_bytes)
            print(f"\none job writing {b['stdout_mb']:.1f} MB of JSONL:")
            print(f"  {b['seconds']:.2f} s ({b['mb_per_second']:.0f} MB/s),"
                  f" {b['events_stored']:.0f} events stored (capped per job)")  # fmt: skip
            print(f"  gateway RSS growth peak {b['peak_rss_growth_mib']:.1f} MiB,"
                  f" after {b['end_rss_growth_mib']:.1f} MiB   (target: < 20 MiB)")  # fmt: skip
        finally:
            await rt.close(cancel_running=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=200, help="sequential jobs for overhead")
    parser.add_argument("--jobs", type=int, default=200, help="concurrent submissions")
    parser.add_argument("--max-running", type=int, default=8)
    parser.add_argument("--big-mb", type=float, default=50.0)
    parser.add_argument(
        "--isolation",
        choices=["off", "bwrap"],
        default="off",
        help="run the owner's jobs inside the bubblewrap boundary (its cost: compare both runs)",
    )
    parser.add_argument(
        "--cli",
        choices=["printf", "codex"],
        default="printf",
        help="the fake CLI through a bare provider (printf) or through the real Codex provider",
    )
    parser.add_argument(
        "--executor",
        choices=["local", "detached"],
        default="local",
        help="how jobs run; 'detached' also measures it against the local executor, same run",
    )
    asyncio.run(main(parser.parse_args()))

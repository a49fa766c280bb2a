"""Time from the runtime recording a job event to the widget update leaving the kernel.

A real kernel runs ``%codex_async`` with the real Codex CLI against the local mock model
(``[mock:steps=N,step_delay=...]`` makes N spaced events); the client side of the kernel records
when each comm update carrying an event's ``data-seq`` arrives. Both paths are measured: the
embedded gateway in the kernel, and a Jupyter server with the extension over REST.

Run: ``.venv/bin/python benchmarks/bench_widget.py [--jobs N] [--steps N] [--check]``.
Target: every event in the widget within 250 ms (p95). ``--check`` exits 1 when missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "kernel"))  # the kernel test harness

from kernel_harness import KernelHarness, start_kernel  # noqa: E402

from llmgw_jupyter.testing.codex_home import find_codex_for_tests, write_codex_home  # noqa: E402
from llmgw_jupyter.testing.jupyter_process import start_jupyter  # noqa: E402
from llmgw_jupyter.testing.mock_responses import MockResponsesServer  # noqa: E402

TARGET_MS = 250.0


async def measure(kernel: KernelHarness, jobs: int, steps: int, work: Path) -> list[float]:
    """Delays (ms) of every item.completed event of ``jobs`` jobs, one after the other."""
    delays: list[float] = []
    await kernel.execute(f"%load_ext llmgw_jupyter\nWORK = {str(work)!r}")
    for index in range(jobs):
        await kernel.execute(
            f"job = %codex_async --cd {{WORK}} Bench {index} [mock:steps={steps},step_delay=0.3]"
        )
        job_id = (await kernel.execute("print(job.id)")).stream().strip()
        widget = await kernel.wait_status(job_id, {"succeeded", "failed"}, 120)
        run = await kernel.execute(
            "import json; print(json.dumps([e for e in job.events "
            "if e['type'] == 'item.completed']))"
        )
        events = json.loads(run.stream())
        view = kernel.child(widget, "llmgw-events")
        for event in events:
            recorded = datetime.fromisoformat(event["ts"]).timestamp()
            marker = f'data-seq="{event["seq"]}"'
            shown = next(t for t, update in view.history if marker in str(update.get("value")))
            delays.append((shown - recorded) * 1000)
    return delays


def report(name: str, delays: list[float]) -> float:
    ordered = sorted(delays)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    print(
        f"{name:9} n={len(ordered):3}  median {statistics.median(ordered):6.1f} ms  "
        f"p95 {p95:6.1f} ms  max {ordered[-1]:6.1f} ms"
    )
    return p95


async def main(args: argparse.Namespace) -> int:
    codex = find_codex_for_tests()
    if codex is None:
        print("Codex CLI not found (npm install --prefix .codex-cli @openai/codex@0.169.0)")
        return 2
    with tempfile.TemporaryDirectory() as scratch, MockResponsesServer() as mock:
        root = Path(scratch)
        home = write_codex_home(root / "codex-home", mock.base_url)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMGW_", "JUPYTER_"))}
        env.update(
            CODEX_HOME=str(home),
            LLMGW_CODEX_PATH=codex,
            LLMGW_DATA_DIR=str(root / "embedded"),
            JUPYTER_RUNTIME_DIR=str(root / "runtime"),
            JUPYTER_CONFIG_DIR=str(root / "config"),
            JUPYTER_DATA_DIR=str(root / "data"),
            IPYTHONDIR=str(root / "ipython"),
        )
        work = root / "work"
        work.mkdir()
        p95s = []
        kernel = await start_kernel(env, work)
        try:
            p95s.append(report("embedded", await measure(kernel, args.jobs, args.steps, work)))
        finally:
            await kernel.stop()
        server = start_jupyter(
            root / "server",
            data_dir=root / "server-data",
            codex_path=codex,
            codex_home=home,
            env=env,
        )
        try:
            kernel = await start_kernel(server.kernel_env(env), work)
            try:
                p95s.append(report("rest", await measure(kernel, args.jobs, args.steps, work)))
            finally:
                await kernel.stop()
        finally:
            server.stop()
    missed = [p for p in p95s if p > TARGET_MS]
    print(f"target: p95 under {TARGET_MS:.0f} ms: {'missed' if missed else 'met'}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--check", action="store_true")
    sys.exit(asyncio.run(main(parser.parse_args())))

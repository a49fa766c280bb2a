"""The MCP endpoint over real HTTP on loopback, against a real ``jupyter server`` subprocess.

Run: ``.venv/bin/python benchmarks/bench_server.py [--calls N] [--rounds N] [--check]``.

Figures (targets from issue 4):
- ``llm_job_status`` calls/s and median/p95 latency from 8 concurrent official-client sessions;
- the same from a minimal raw client: 8 keep-alive connections (``http.client`` in threads),
  each with its own MCP session, posting JSON-RPC ``tools/call`` (target >= 3,000 calls/s and
  median < 2.5 ms), as the owner and as a grant;
- job end (``finished_at``) -> a waiting ``llm_job_watch`` returning (target median < 50 ms);
- sync ``codex_request`` of an instant fake Codex minus the fake's own run time (target < 20 ms).

The fake Codex is a shell script printing the four JSONL lines of a successful ``codex exec
--json`` (with a fresh thread id); a prompt containing ``slow`` makes it wait 0.3 s before it
exits. ``--check`` exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from mcp.client.session import ClientSession

from llmgw_jupyter.testing.jupyter_process import JupyterProcess, start_jupyter
from llmgw_jupyter.testing.mcp_agent import agent_session

TARGET_RAW_CALLS_PER_S = 3000.0
TARGET_RAW_MEDIAN_MS = 2.5
TARGET_WATCH_MS = 50.0
TARGET_SYNC_OVER_MS = 20.0
CLIENTS = 8

FAKE_CODEX = r"""#!/bin/sh
prompt=$(cat)
id=$(cat /proc/sys/kernel/random/uuid)
printf '%s\n' "{\"type\":\"thread.started\",\"thread_id\":\"$id\"}" '{"type":"turn.started"}' \
  '{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"ok"}}' \
  '{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":0,"output_tokens":1,"reasoning_output_tokens":0}}'
case "$prompt" in *slow*) sleep 0.3 ;; esac
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def line(label: str, timings_ms: list[float], extra: str = "") -> str:
    return (
        f"  {label:<34} median {statistics.median(timings_ms):7.2f} ms"
        f"   p95 {percentile(timings_ms, 0.95):7.2f} ms{extra}"
    )


def session(url: str, token: str) -> Any:
    return agent_session(url, token, 60.0)


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return dict(result.structured_content)


# -- official client ------------------------------------------------------------------------
async def official_status(server: JupyterProcess, token: str, job_id: str, calls: int) -> str:
    per_client = max(1, calls // CLIENTS)
    timings: list[float] = []

    async def worker(client: ClientSession) -> None:
        for _ in range(per_client):
            start = time.perf_counter()
            result = await client.call_tool("llm_job_status", {"job_id": job_id})
            timings.append((time.perf_counter() - start) * 1000)
            assert not result.is_error

    sessions = [session(server.mcp_url, token) for _ in range(CLIENTS)]
    clients = [await s.__aenter__() for s in sessions]
    try:
        for client in clients:  # warm-up
            await client.call_tool("llm_job_status", {"job_id": job_id})
        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        elapsed = time.perf_counter() - start
    finally:
        for s in reversed(sessions):
            await s.__aexit__(None, None, None)
    rate = len(timings) / elapsed
    return line(f"official client, {CLIENTS} sessions", timings, f"   {rate:8.0f} calls/s")


# -- raw client -------------------------------------------------------------------------------
class RawMCP:
    """One keep-alive connection with its own MCP session; answers are read in full."""

    def __init__(self, server: JupyterProcess, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.path = server.base_url + "llmgw/mcp"
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        self.next_id = 0
        reply = self.post(
            {
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"},
                },
            }
        )
        assert "result" in reply, reply
        self.headers["mcp-protocol-version"] = "2025-06-18"
        self.post({"method": "notifications/initialized"}, notify=True)

    def post(self, message: dict[str, Any], notify: bool = False) -> dict[str, Any]:
        if not notify:
            self.next_id += 1
            message = {"id": self.next_id, **message}
        self.conn.request(
            "POST", self.path, json.dumps({"jsonrpc": "2.0", **message}), self.headers
        )
        resp = self.conn.getresponse()
        body = resp.read()
        session_id = resp.getheader("mcp-session-id")
        if session_id:
            self.headers["mcp-session-id"] = session_id
        if notify:
            assert resp.status == 202, (resp.status, body)
            return {}
        assert resp.status == 200, (resp.status, body)
        text = body.decode()
        if resp.getheader("content-type", "").startswith("text/event-stream"):
            text = [ln[5:] for ln in text.splitlines() if ln.startswith("data:")][-1]
        return dict(json.loads(text))

    def status(self, job_id: str) -> None:
        reply = self.post(
            {
                "method": "tools/call",
                "params": {"name": "llm_job_status", "arguments": {"job_id": job_id}},
            }
        )
        assert reply["result"]["isError"] is False, reply


class RawJupyterStatus:
    """Baseline in the same run: Jupyter's own authenticated ``GET /api/status``, same load."""

    def __init__(self, server: JupyterProcess, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.path = server.base_url + "api/status"
        self.headers = {"Authorization": f"token {token}"}

    def status(self, job_id: str) -> None:
        self.conn.request("GET", self.path, headers=self.headers)
        resp = self.conn.getresponse()
        resp.read()
        assert resp.status == 200, resp.status


def raw_status(
    server: JupyterProcess,
    token: str,
    job_id: str,
    calls: int,
    label: str,
    client_class: type[RawMCP] | type[RawJupyterStatus] = RawMCP,
) -> tuple[str, float, float]:
    """Calls/s and latency; the server's CPU time per call is the figure load does not move."""
    per_client = max(1, calls // CLIENTS)
    process = psutil.Process(server.process.pid)
    clients = [client_class(server, token) for _ in range(CLIENTS)]
    for client in clients:
        client.status(job_id)
    timings: list[list[float]] = [[] for _ in clients]
    barrier = threading.Barrier(CLIENTS + 1)

    def worker(index: int) -> None:
        client, mine = clients[index], timings[index]
        barrier.wait()
        perf = time.perf_counter
        for _ in range(per_client):
            start = perf()
            client.status(job_id)
            mine.append((perf() - start) * 1000)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    cpu_before = sum(process.cpu_times()[:2])
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    cpu_ms = (sum(process.cpu_times()[:2]) - cpu_before) * 1000
    for client in clients:
        client.conn.close()
    flat = [t for mine in timings for t in mine]
    rate = len(flat) / elapsed
    extra = f"   {rate:8.0f} calls/s   server CPU {cpu_ms / len(flat):.2f} ms/call"
    return line(label, flat, extra), rate, statistics.median(flat)


# -- watch and sync -------------------------------------------------------------------------------
async def watch_latency(server: JupyterProcess, rounds: int) -> list[float]:
    """finished_at of a job -> the waiting llm_job_watch's answer in the client's hands."""
    lags: list[float] = []
    async with session(server.mcp_url, server.token) as client:
        for _ in range(rounds):
            job = structured(await client.call_tool("codex_request_async", {"prompt": "slow"}))
            job_id, after = job["job"]["id"], 0
            while True:  # until the fake has printed everything (it then sleeps 0.3 s)
                watched = structured(
                    await client.call_tool(
                        "llm_job_watch",
                        {"job_id": job_id, "after_seq": after, "timeout_seconds": 10},
                    )
                )
                after = watched["next_after_seq"]
                if watched["done"] or any(e["type"] == "turn.completed" for e in watched["events"]):
                    break
            watched = structured(
                await client.call_tool(
                    "llm_job_watch", {"job_id": job_id, "after_seq": after, "timeout_seconds": 10}
                )
            )
            received = time.time()
            assert watched["done"], watched
            finished = datetime.fromisoformat(watched["job"]["finished_at"]).timestamp()
            lags.append((received - finished) * 1000)
    return lags


def own_time(fake: Path, rounds: int) -> list[float]:
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(
            [str(fake), "exec", "--json", "-"], input=b"x", capture_output=True, check=True
        )
        timings.append((time.perf_counter() - start) * 1000)
    return timings


async def sync_request(server: JupyterProcess, rounds: int) -> list[float]:
    timings = []
    async with session(server.mcp_url, server.token) as client:
        for _ in range(rounds):
            start = time.perf_counter()
            done = structured(
                await client.call_tool("codex_request", {"prompt": "x", "wait_seconds": 30})
            )
            timings.append((time.perf_counter() - start) * 1000)
            assert done["done"] and done["final_message"] == "ok", done
    return timings


# -- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=4000, help="status calls per client kind")
    parser.add_argument("--rounds", type=int, default=30, help="watch and sync rounds")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="llmgw-bench-") as tmp:
        work = Path(tmp)
        fake = work / "fake-codex"
        fake.write_text(FAKE_CODEX)
        fake.chmod(0o755)
        server = start_jupyter(
            work,
            data_dir=work / "data",
            codex_path=str(fake),
            args=["--LLMGatewayApp.max_running=8", "--ServerApp.log_level=WARN"],
        )
        try:
            return asyncio.run(run(server, fake, args))
        finally:
            server.stop()


async def run(server: JupyterProcess, fake: Path, args: argparse.Namespace) -> int:
    rest = httpx.Client(base_url=server.url + "llmgw/api/", headers=server.auth, timeout=30)
    job = rest.post("jobs", json={"prompt": "status target"}).json()["structured"]["job"]
    grant = rest.post(
        "grants", json={"name": "bench", "policy": {"version": "1", "default": "allow"}}
    ).json()["token"]
    rest.get(f"jobs/{job['id']}/events", params={"wait": 10})

    print(f"llm_job_status, {CLIENTS} concurrent clients over loopback HTTP (jupyter server):")
    print(f"  (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)")
    print(await official_status(server, server.token, job["id"], args.calls // 4))
    loop = asyncio.get_running_loop()
    baseline, _, _ = await loop.run_in_executor(
        None,
        raw_status,
        server,
        server.token,
        job["id"],
        args.calls,
        "baseline: Jupyter GET /api/status",
        RawJupyterStatus,
    )
    print(baseline)
    raw_owner, owner_rate, owner_median = await loop.run_in_executor(
        None, raw_status, server, server.token, job["id"], args.calls, "raw client, owner token"
    )
    print(raw_owner)
    grant_job = RawMCP(server, grant).post(
        {
            "method": "tools/call",
            "params": {"name": "codex_request_async", "arguments": {"prompt": "grant's job"}},
        }
    )["result"]["structuredContent"]["job"]["id"]
    raw_grant, grant_rate, grant_median = await loop.run_in_executor(
        None, raw_status, server, grant, grant_job, args.calls, "raw client, grant token"
    )
    print(raw_grant)
    target = f">= {TARGET_RAW_CALLS_PER_S:.0f} calls/s, median < {TARGET_RAW_MEDIAN_MS} ms"
    print(f"  target (raw): {target}")

    lags = await watch_latency(server, args.rounds)
    print("job end -> waiting llm_job_watch returns:")
    print(
        line(
            "finished_at -> answer received", lags, f"   (target median < {TARGET_WATCH_MS:.0f} ms)"
        )
    )

    own = own_time(fake, args.rounds)
    sync = await sync_request(server, args.rounds)
    over = statistics.median(sync) - statistics.median(own)
    print("sync codex_request of an instant fake job:")
    print(line("the fake alone (subprocess.run)", own))
    print(line("codex_request round trip", sync))
    print(f"  over the job's own time: {over:6.2f} ms (target < {TARGET_SYNC_OVER_MS:.0f} ms)")
    rest.close()

    missed = [
        name
        for name, ok in (
            ("raw calls/s", min(owner_rate, grant_rate) >= TARGET_RAW_CALLS_PER_S),
            ("raw median", max(owner_median, grant_median) < TARGET_RAW_MEDIAN_MS),
            ("watch", statistics.median(lags) < TARGET_WATCH_MS),
            ("sync", over < TARGET_SYNC_OVER_MS),
        )
        if not ok
    ]
    if missed:
        print("missed: " + ", ".join(missed))
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())

"""The MCP endpoint over real HTTP on loopback, against a real ``jupyter server`` subprocess.

Run: ``.venv/bin/python benchmarks/bench_server.py [--calls N] [--rounds N] [--repeat N]
[--check]``.

Every headline figure is a ratio against a baseline measured in the same run (absolute times
drift between machines and with their load); targets from issue 10:

- ``llm_job_status`` from a minimal raw client (8 keep-alive ``http.client`` connections in
  threads, each with its own MCP session, posting JSON-RPC ``tools/call``) against Jupyter's own
  authenticated ``GET /api/status`` from the same client: calls/s ratio (target >= 2x) and the
  server process's CPU per call (``psutil``, user + system) ratio (target <= 0.5x). Both run
  ``--repeat`` times, alternating, so a burst of other work on the machine hits both;
- sequential ``codex_request_async`` -> ``llm_job_status`` -> ``llm_job_result`` with the
  official Python client, minus the same client's own cost: the same sequence against
  ``mcp_stub.py``, a do-nothing server replaying the answers recorded from this gateway
  (target: within 2 ms);
- the same load and the same sequence against the opt-in direct MCP listener
  (``c.LLMGatewayApp.mcp_direct_port``: uvicorn + httptools on Jupyter's loop, outside Tornado),
  in the same server process and the same runs, with the same ``/api/status`` baseline;
- diagnostics: the gateway's own ``Gateway.call("llm_job_status")`` plus the quick path's
  encoding of its JSON-RPC answer (``mcp_results.answer_bytes``), CPU in this process (the floor
  under any HTTP front; a success makes its JSON only when the answer is written), raw MCP
  ``ping`` on the same quick path (the floor of the HTTP front: Tornado's request cycle plus the
  endpoint's checks, no tool), 8 official-client sessions, job end -> waiting ``llm_job_watch``
  (median < 50 ms), and a sync ``codex_request`` of an instant fake Codex over its run time.

The fake Codex is a shell script printing the four JSONL lines of a successful ``codex exec
--json`` (with a fresh thread id); a prompt containing ``slow`` makes it wait 0.3 s before it
exits. ``--check`` exits 1 when a target is missed. Loopback only, bounded loops only.
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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import psutil
from mcp.client.session import ClientSession

from llmgw_jupyter.testing.jupyter_process import JupyterProcess, free_port, start_jupyter
from llmgw_jupyter.testing.mcp_agent import agent_session

TARGET_RATE_RATIO = 2.0  # raw llm_job_status calls/s over Jupyter's /api/status calls/s
TARGET_CPU_RATIO = 0.5  # server CPU per status call over /api/status's
TARGET_SEQUENCE_OVER_MS = 2.0  # submit -> status -> result over the client's own cost
TARGET_WATCH_MS = 50.0
TARGET_SYNC_OVER_MS = 20.0
CLIENTS = 8
STUB = Path(__file__).with_name("mcp_stub.py")

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
@dataclass(frozen=True)
class Front:
    """Where a raw client sends its MCP requests: Jupyter's route or the direct listener."""

    name: str
    port: int
    path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def tornado_front(server: JupyterProcess) -> Front:
    return Front("Tornado", server.port, server.base_url + "llmgw/mcp")


class RawClient(Protocol):
    def status(self, job_id: str) -> None: ...
    def close(self) -> None: ...


class RawMCP:
    """One keep-alive connection with its own MCP session; answers are read in full."""

    def __init__(self, front: Front, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
        self.path = front.path
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

    def close(self) -> None:
        """End the MCP session (a grant may hold only so many) and the connection."""
        self.conn.request("DELETE", self.path, headers=self.headers)
        self.conn.getresponse().read()
        self.conn.close()

    def status(self, job_id: str) -> None:
        reply = self.post(
            {
                "method": "tools/call",
                "params": {"name": "llm_job_status", "arguments": {"job_id": job_id}},
            }
        )
        assert reply["result"]["isError"] is False, reply


class RawPing(RawMCP):
    """The HTTP front's floor: MCP ``ping`` on the same quick path, no tool behind it."""

    def status(self, job_id: str) -> None:
        assert self.post({"method": "ping"})["result"] == {}


class RawJupyterStatus:
    """Baseline in the same run: Jupyter's own authenticated ``GET /api/status``, same load."""

    def __init__(self, server: JupyterProcess, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.path = server.base_url + "api/status"
        self.headers = {"Authorization": f"token {token}"}

    def close(self) -> None:
        self.conn.close()

    def status(self, job_id: str) -> None:
        self.conn.request("GET", self.path, headers=self.headers)
        resp = self.conn.getresponse()
        resp.read()
        assert resp.status == 200, resp.status


@dataclass
class Load:
    """One load run of 8 keep-alive clients: the figures the ratios are made of."""

    label: str
    rate: float  # calls/s
    median_ms: float
    p95_ms: float
    cpu_ms: float  # server process CPU (user + system) per call

    def __str__(self) -> str:
        return (
            f"  {self.label:<34} median {self.median_ms:7.2f} ms   p95 {self.p95_ms:7.2f} ms"
            f"   {self.rate:8.0f} calls/s   server CPU {self.cpu_ms:.3f} ms/call"
        )


def raw_status(
    server: JupyterProcess,
    make: Callable[[], RawClient],
    job_id: str,
    calls: int,
    label: str,
) -> Load:
    """Calls/s and latency; the server's CPU time per call is the figure load moves least."""
    per_client = max(1, calls // CLIENTS)
    process = psutil.Process(server.process.pid)
    clients = [make() for _ in range(CLIENTS)]
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
        client.close()
    flat = [t for mine in timings for t in mine]
    return Load(
        label,
        len(flat) / elapsed,
        statistics.median(flat),
        percentile(flat, 0.95),
        cpu_ms / len(flat),
    )


# -- sequential submit -> status -> result ----------------------------------------------------
SEQUENCE = ("codex_request_async", "llm_job_status", "llm_job_result")


async def sequence_rounds(url: str, token: str, rounds: int) -> list[float]:
    """Wall time of submit -> status -> result with the official client, one round at a time."""
    timings: list[float] = []
    async with session(url, token) as client:
        for index in range(rounds + 2):  # two warm-up rounds (the client lists tools once)
            start = time.perf_counter()
            job = structured(await client.call_tool(SEQUENCE[0], {"prompt": "sequence"}))
            job_id = job["job"]["id"]
            structured(await client.call_tool(SEQUENCE[1], {"job_id": job_id}))
            structured(await client.call_tool(SEQUENCE[2], {"job_id": job_id}))
            if index >= 2:
                timings.append((time.perf_counter() - start) * 1000)
    return timings


def record_answers(server: JupyterProcess, token: str, path: Path) -> None:
    """What the gateway answers to the sequence, for the stub to replay byte for byte."""
    raw = RawMCP(tornado_front(server), token)
    init = raw.post(
        {
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        }
    )
    answers: dict[str, Any] = {
        "initialize": init["result"],
        "tools/list": raw.post({"method": "tools/list"})["result"],
        "tools/call": {},
    }
    arguments: dict[str, Any] = {"prompt": "recorded"}
    for tool in SEQUENCE:
        reply = raw.post({"method": "tools/call", "params": {"name": tool, "arguments": arguments}})
        answers["tools/call"][tool] = reply["result"]
        arguments = {"job_id": reply["result"]["structuredContent"]["job"]["id"]}
    raw.close()
    path.write_text(json.dumps(answers))


def start_stub(answers: Path) -> tuple[subprocess.Popen[str], str]:
    stub = subprocess.Popen(
        [sys.executable, str(STUB), str(answers)], stdout=subprocess.PIPE, text=True
    )
    assert stub.stdout is not None
    port = int(stub.stdout.readline())
    return stub, f"http://127.0.0.1:{port}/mcp"


# -- the gateway's own floor ------------------------------------------------------------------
async def gateway_floor(fake: Path, work: Path, calls: int) -> float:
    """CPU per ``Gateway.call("llm_job_status")`` and its encoded JSON-RPC answer in this
    process, on a job like the bench's: what any HTTP front must add its own cost to."""
    from llmgw_jupyter.gateway import Gateway
    from llmgw_jupyter.policy import PolicySource
    from llmgw_jupyter.runtime import Runtime, RuntimeConfig
    from llmgw_jupyter.server.mcp_results import answer_bytes
    from llmgw_jupyter.tools import Caller

    runtime = Runtime(RuntimeConfig(data_dir=work / "floor", codex_path=str(fake), isolation="off"))
    await runtime.start()
    gateway = Gateway(runtime, owner_policy=PolicySource(None))
    await gateway.start()
    try:
        owner = Caller.owner()
        done = await gateway.call("codex_request", {"prompt": "x", "wait_seconds": 30}, owner)
        job_id = (done.structured or {})["job"]["id"]
        for index in range(100):
            answer_bytes(index, await gateway.call("llm_job_status", {"job_id": job_id}, owner))
        start = time.process_time()
        for index in range(calls):
            answer_bytes(index, await gateway.call("llm_job_status", {"job_id": job_id}, owner))
        return (time.process_time() - start) * 1000 / calls
    finally:
        await gateway.close()
        await runtime.close()


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
    parser.add_argument("--calls", type=int, default=4000, help="status calls per load run")
    parser.add_argument("--rounds", type=int, default=30, help="sequence, watch and sync rounds")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each ratio")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="llmgw-bench-") as tmp:
        work = Path(tmp)
        fake = work / "fake-codex"
        fake.write_text(FAKE_CODEX)
        fake.chmod(0o755)
        direct_port = free_port()
        server = start_jupyter(
            work,
            data_dir=work / "data",
            codex_path=str(fake),
            args=[
                "--LLMGatewayApp.max_running=8",
                "--ServerApp.log_level=WARN",
                f"--LLMGatewayApp.mcp_direct_port={direct_port}",
            ],
        )
        try:
            direct = Front("direct", direct_port, "/mcp")
            return asyncio.run(run(server, direct, fake, work, args))
        finally:
            server.stop()


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (5 min {five:.2f}) on {os.cpu_count()} CPUs"


@dataclass
class Run:
    """One alternating run: the baseline and each front's owner and grant loads."""

    base: Load
    fronts: dict[str, tuple[Load, Load]]  # front name -> (owner, grant)


def ratio(runs: list[Run], front: str, who: int, figure: str) -> float:
    """Median over runs of a front's figure over the baseline's (calls/s or CPU per call)."""
    values = []
    for one in runs:
        load = one.fronts[front][who]
        if figure == "rate":
            values.append(load.rate / one.base.rate)
        else:
            values.append(load.cpu_ms / one.base.cpu_ms)
    return statistics.median(values)


async def run(
    server: JupyterProcess, direct: Front, fake: Path, work: Path, args: argparse.Namespace
) -> int:
    rest = httpx.Client(base_url=server.url + "llmgw/api/", headers=server.auth, timeout=30)
    job = rest.post("jobs", json={"prompt": "status target"}).json()["structured"]["job"]
    grant = rest.post(
        "grants", json={"name": "bench", "policy": {"version": "1", "default": "allow"}}
    ).json()["token"]
    rest.get(f"jobs/{job['id']}/events", params={"wait": 10})
    tornado = tornado_front(server)
    fronts = (tornado, direct)
    grant_client = RawMCP(tornado, grant)
    grant_job = grant_client.post(
        {
            "method": "tools/call",
            "params": {"name": "codex_request_async", "arguments": {"prompt": "grant's job"}},
        }
    )["result"]["structuredContent"]["job"]["id"]
    grant_client.close()
    rest.get(f"jobs/{grant_job}/events", params={"wait": 10})
    loop = asyncio.get_running_loop()

    def load(make: Callable[[], RawClient], job_id: str, label: str) -> Any:
        return loop.run_in_executor(None, raw_status, server, make, job_id, args.calls, label)

    def mcp(front: Front, token: str, kind: type[RawMCP] = RawMCP) -> Callable[[], RawClient]:
        return lambda: kind(front, token)

    print(f"llm_job_status, {CLIENTS} keep-alive raw clients over loopback ({load_note()}):")
    runs: list[Run] = []
    for index in range(args.repeat):
        base = await load(
            lambda: RawJupyterStatus(server, server.token),
            job["id"],
            "baseline: Jupyter GET /api/status",
        )
        loads: dict[str, tuple[Load, Load]] = {}
        for front in fronts:
            owner = await load(mcp(front, server.token), job["id"], f"{front.name}: owner token")
            granted = await load(mcp(front, grant), grant_job, f"{front.name}: grant token")
            loads[front.name] = (owner, granted)
        runs.append(Run(base, loads))
        print(f" run {index + 1} ({load_note()}):")
        print(base)
        for front in fronts:
            owner, granted = loads[front.name]
            print(owner)
            print(granted)
            print(
                f"  {front.name} ratios: calls/s owner {owner.rate / base.rate:.2f}x grant "
                f"{granted.rate / base.rate:.2f}x; server CPU/call owner "
                f"{owner.cpu_ms / base.cpu_ms:.2f}x grant {granted.cpu_ms / base.cpu_ms:.2f}x"
            )
    base_cpu = statistics.median(one.base.cpu_ms for one in runs)

    floor = await gateway_floor(fake, work, 2000)
    print(
        f"gateway floor: Gateway.call('llm_job_status') + its encoded answer, in-process "
        f"{floor:.3f} ms CPU/call = "
        f"{floor / base_cpu:.2f}x of /api/status's server CPU per call"
    )
    for front in fronts:
        ping = await load(mcp(front, server.token, RawPing), job["id"], f"{front.name}: MCP ping")
        print(ping)
        print(
            f"HTTP front floor ({front.name}): MCP ping {ping.cpu_ms:.3f} ms CPU/call = "
            f"{ping.cpu_ms / base_cpu:.2f}x of /api/status's server CPU per call ({load_note()})"
        )

    print(f"official client, {CLIENTS} sessions:")
    print(await official_status(server, server.token, job["id"], args.calls // 4))

    answers = work / "answers.json"
    record_answers(server, server.token, answers)
    stub, stub_url = start_stub(answers)
    print("sequential codex_request_async -> llm_job_status -> llm_job_result, official client:")
    overs: dict[str, list[float]] = {front.name: [] for front in fronts}
    try:
        for index in range(args.repeat):
            own = await sequence_rounds(stub_url, server.token, args.rounds)
            print(f" run {index + 1} ({load_note()}):")
            print(line("client's own cost (replay stub)", own))
            for front in fronts:
                real = await sequence_rounds(front.url, server.token, args.rounds)
                over = statistics.median(real) - statistics.median(own)
                overs[front.name].append(over)
                print(line(front.name, real, f"   over the client's own: {over:5.2f} ms"))
    finally:
        stub.terminate()
        stub.wait()

    lags = await watch_latency(server, args.rounds)
    print("job end -> waiting llm_job_watch returns:")
    print(line("finished_at -> answer received", lags))
    own_fake = own_time(fake, args.rounds)
    sync = await sync_request(server, args.rounds)
    sync_over = statistics.median(sync) - statistics.median(own_fake)
    print(f"sync codex_request over the fake job's own time: {sync_over:6.2f} ms")
    rest.close()

    targets: list[tuple[str, str, str, bool]] = []
    for front in fronts:
        for who, caller in enumerate(("owner", "grant")):
            rate = ratio(runs, front.name, who, "rate")
            cpu = ratio(runs, front.name, who, "cpu")
            targets.append(
                (
                    f"{front.name}: raw calls/s vs /api/status ({caller})",
                    f"{rate:.2f}x",
                    ">= 2x",
                    rate >= TARGET_RATE_RATIO,
                )
            )
            targets.append(
                (
                    f"{front.name}: server CPU/call vs /api/status ({caller})",
                    f"{cpu:.2f}x",
                    "<= 0.5x",
                    cpu <= TARGET_CPU_RATIO,
                )
            )
        over = statistics.median(overs[front.name])
        targets.append(
            (
                f"{front.name}: sequence over the client's own",
                f"{over:.2f} ms",
                "<= 2 ms",
                over <= TARGET_SEQUENCE_OVER_MS,
            )
        )
    targets += [
        (
            "job end -> llm_job_watch median",
            f"{statistics.median(lags):.2f} ms",
            "< 50 ms",
            statistics.median(lags) < TARGET_WATCH_MS,
        ),
        (
            "sync codex_request over the job",
            f"{sync_over:.2f} ms",
            "< 20 ms",
            sync_over < TARGET_SYNC_OVER_MS,
        ),
    ]
    print(f"summary (medians of {args.repeat} runs; {load_note()}):")
    for name, value, target, ok in targets:
        print(f"  {name:<50} {value:>9}   target {target:<8} {'met' if ok else 'MISSED'}")
    missed = [name for name, _, _, ok in targets if not ok]
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Jobs survive the Jupyter server (``c.LLMGatewayApp.executor = "detached"``).

A real ``jupyter server`` subprocess runs the real Codex CLI against the mock model (a slow
answer), inside the isolation boundary. The server is stopped with SIGTERM or killed with
SIGKILL while the job runs; a new server on the same data dir follows the job again, which ends
``succeeded`` with its whole answer and events 1..N, each once. A job that ended while no server
was up is settled on start, and cancelling an adopted job kills its whole process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from llmgw_jupyter.testing.codex_home import write_codex_home
from llmgw_jupyter.testing.jupyter_process import JupyterProcess, start_jupyter
from llmgw_jupyter.testing.mock_responses import MockResponsesServer

WAIT = 90.0


class Servers:
    """Jupyter servers started one after another on one data dir (all stopped at the end)."""

    def __init__(self, base: Path, codex_path: str, codex_home: Path) -> None:
        self.base = base
        self.codex_path = codex_path
        self.codex_home = codex_home
        self.data_dir = base / "llmgw-data"
        self.started: list[JupyterProcess] = []

    def start(self) -> JupyterProcess:
        server = start_jupyter(
            self.base / f"server-{len(self.started)}",
            data_dir=self.data_dir,
            codex_path=self.codex_path,
            codex_home=self.codex_home,
            args=["--LLMGatewayApp.executor=detached"],
        )
        self.started.append(server)
        return server


@pytest.fixture
def servers(tmp_path: Path, codex_path: str, mock_model: MockResponsesServer) -> Iterator[Servers]:
    made = Servers(
        tmp_path, codex_path, write_codex_home(tmp_path / "codex-home", mock_model.base_url)
    )
    yield made
    for server in made.started:
        server.stop(signal.SIGKILL)
    for job_dir in (made.data_dir / "jobs").glob("*"):  # nothing is left running after a test
        stop_run(job_dir)


def stop_run(job_dir: Path) -> None:
    info_file = job_dir / "supervisor.json"
    if not info_file.exists():
        return
    info = json.loads(info_file.read_text())
    for pid in (info["pid"], info["cli_pid"]):
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()


def api(server: JupyterProcess) -> httpx.Client:
    return httpx.Client(base_url=server.api_url, headers=server.auth, timeout=WAIT)


def submit(server: JupyterProcess, prompt: str) -> str:
    with api(server) as client:
        resp = client.post("jobs", json={"prompt": prompt})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["structured"]["job"]["id"])


def pages(server: JupyterProcess, job_id: str) -> Iterator[tuple[dict[str, Any], list[Any]]]:
    """The job's events page by page with the long-poll (each page: the job and the events
    after the last page's), for up to ``WAIT`` seconds."""
    after = 0
    deadline = time.monotonic() + WAIT
    with api(server) as client:
        while time.monotonic() < deadline:
            resp = client.get(f"jobs/{job_id}/events", params={"after": after, "wait": 10})
            assert resp.status_code == 200, resp.text
            body = resp.json()
            if body["events"]:
                after = body["events"][-1]["seq"]
            yield dict(body["job"]), list(body["events"])


def events_until(server: JupyterProcess, job_id: str, kind: str) -> dict[str, Any]:
    """Long-poll the job's events until one of type ``kind`` is stored; returns the job."""
    for job, events in pages(server, job_id):
        if any(event["type"] == kind for event in events):
            return job
        assert job["finished_at"] is None, job
    pytest.fail(f"no {kind} event for job {job_id}")


def finished(server: JupyterProcess, job_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Follow the job with the long-poll until it ends; returns it and all its events."""
    for job, events in pages(server, job_id):
        if job["finished_at"] is not None and not events:
            with api(server) as client:
                every = client.get(f"jobs/{job_id}/events", params={"after": 0, "limit": 1000})
            return job, list(every.json()["events"])
    pytest.fail(f"job {job_id} did not finish")


def assert_whole(job: dict[str, Any], events: list[dict[str, Any]], answer: str) -> None:
    assert job["status"] == "succeeded", job
    assert job["final_message"] == answer
    seqs = [event["seq"] for event in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    kinds = [event["type"] for event in events]
    assert kinds.count("thread.started") == kinds.count("turn.completed") == 1, kinds
    messages = [e for e in events if e["type"] == "item.completed"]
    assert [e["data"]["item"]["text"] for e in messages] == [answer]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_running_job_survives_a_server_restart(servers: Servers, stop: signal.Signals) -> None:
    first = servers.start()
    job_id = submit(first, "survive the restart [mock:delay=6]")
    job = events_until(first, job_id, "turn.started")
    supervisor = psutil.Process(job["pid"])
    first.stop(stop)
    assert running(supervisor), "the job's supervisor must outlive the server"

    second = servers.start()
    job, events = finished(second, job_id)
    assert_whole(job, events, "echo: survive the restart [mock:delay=6]")
    deadline = time.monotonic() + WAIT
    while running(supervisor) and time.monotonic() < deadline:
        time.sleep(0.05)  # it exits just after recording the exit: no event to wait on
    assert not running(supervisor), "the supervisor must exit once its job ended"


def test_a_job_that_ended_while_no_server_was_up_is_settled_on_start(servers: Servers) -> None:
    first = servers.start()
    job_id = submit(first, "finish alone [mock:delay=1]")
    events_until(first, job_id, "turn.started")
    first.stop(signal.SIGTERM)
    exit_file = servers.data_dir / "jobs" / job_id / "exit.json"
    deadline = time.monotonic() + WAIT
    while not exit_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # a process outside this test: no event to wait on
    assert exit_file.exists(), "the supervisor did not record the exit"

    second = servers.start()
    job, events = finished(second, job_id)
    assert_whole(job, events, "echo: finish alone [mock:delay=1]")
    assert job["exit_code"] == 0


def test_cancel_of_an_adopted_job_kills_its_whole_group(servers: Servers) -> None:
    first = servers.start()
    job_id = submit(first, "never answered [mock:delay=120]")
    job = events_until(first, job_id, "turn.started")
    first.stop(signal.SIGKILL)
    info = json.loads((servers.data_dir / "jobs" / job_id / "supervisor.json").read_text())
    supervisor = psutil.Process(job["pid"])
    family = [supervisor, *supervisor.children(recursive=True)]
    assert len(family) >= 3, family  # supervisor, the boundary, Codex (launcher and binary)

    second = servers.start()
    with api(second) as client:
        resp = client.post(f"jobs/{job_id}/cancel", json={"reason": "adopted, then cancelled"})
    assert resp.status_code == 200, resp.text
    job, _ = finished(second, job_id)
    assert job["status"] == "cancelled", job
    deadline = time.monotonic() + WAIT
    while any(running(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p.pid for p in family if running(p)]
    group = [p for p in psutil.process_iter() if _pgid(p.pid) == info["cli_pid"]]
    assert not [p for p in group if p.status() != psutil.STATUS_ZOMBIE]


def running(process: psutil.Process) -> bool:
    """Alive and not a zombie (a reparented process may stay unreaped)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None

"""Helpers for runtime tests: specs for fake jobs, event waits woken by the runtime, and
process-group probes that poll the kernel with a deadline (signals land asynchronously)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil
import pytest
from runtime_fakes import FakeProvider, open_gate, read_log, write_fake_cli

from llmgw_jupyter.runtime import JobEvent, JobRecord, JobSpec, JobStatus, Runtime

WAIT = 30.0  # generous deadline for anything that should happen "soon" on a loaded machine


class RuntimeFactory(Protocol):
    def __call__(self, **config: Any) -> Awaitable[Runtime]: ...


@dataclass
class Fakes:
    """Writes fake CLIs into the test's tmp dir; all of them share one gate and one log."""

    directory: Path
    env: dict[str, str]

    def provider(self, body: str, *, name: str = "fake", **kwargs: Any) -> FakeProvider:
        """A provider named ``name`` running ``body`` (after the prelude of runtime_fakes)."""
        script = write_fake_cli(self.directory, name, body)
        env = {**self.env, **kwargs.pop("env", {})}
        return FakeProvider(script, name=name, env=env, **kwargs)

    def open_gate(self) -> None:
        open_gate(self.env)

    def log(self) -> list[str]:
        return read_log(self.env)


def spec(prompt: str = "hello", provider: str = "fake", **kwargs: Any) -> JobSpec:
    """A JobSpec for a fake provider; extra keywords go to ``args`` unless JobSpec owns them."""
    own = {k: kwargs.pop(k) for k in ("caller", "idempotency_key", "hold") if k in kwargs}
    return JobSpec(provider, "codex_request_async", "exec", {"prompt": prompt, **kwargs}, **own)


def current(rt: Runtime, job_id: str) -> JobRecord:
    """The job's record as stored now (it must exist)."""
    record = rt.get(job_id)
    assert record is not None, f"job {job_id} not found"
    return record


async def wait_for_event(
    rt: Runtime, job_id: str, predicate: Callable[[JobEvent], bool], timeout: float = WAIT
) -> tuple[JobEvent, JobRecord]:
    """Follow a job's events (woken by the runtime) until one matches; fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seq = 0
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            pytest.fail(f"no matching event for job {job_id} within {timeout} s")
        events, record = await rt.wait_for_events(job_id, seq, remaining)
        for event in events:
            if predicate(event):
                return event, record
        if events:
            seq = events[-1].seq
        elif record.is_terminal:
            pytest.fail(f"job {job_id} ended ({record.status.value}) without the expected event")


async def wait_started(rt: Runtime, job_id: str) -> JobRecord:
    """Wait until the CLI of a job printed ``turn.started`` (it is really running)."""
    _, record = await wait_for_event(rt, job_id, lambda e: e.type == "turn.started")
    return record


def notes(rt: Runtime, job_id: str) -> list[dict[str, Any]]:
    """The ``note`` items a fake CLI printed, in order."""
    return [
        e.data["item"]
        for e in rt.events(job_id, 0, 1000)
        if e.type == "item.completed" and e.data.get("item", {}).get("type") == "note"
    ]


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (psutil.Error, ProcessLookupError):
            continue
    return members


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll a kernel-side condition (process exit) with a deadline; signals land asynchronously."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.01)


def assert_group_gone(pgid: int, pids: Sequence[int] = ()) -> None:
    """No process of the group is left (and none of ``pids``, which may have left the group)."""
    wait_until(
        lambda: not group_members(pgid) and not any(alive(p) for p in pids),
        what=f"process group {pgid} and {list(pids)} to be gone",
    )


def assert_fake_answer_complete(rt: Runtime, record: JobRecord, steps: int) -> list[JobEvent]:
    """A fake-provider job that outlived a runtime or ran elsewhere: succeeded with its answer,
    events 1..N once each, every progress step exactly once, one answer; returns the events."""
    assert record.status is JobStatus.SUCCEEDED, record.error_message
    assert record.final_message is not None and record.final_message.startswith("echo: ")
    events = rt.events(record.id, 0, 1000)
    assert (
        [e.seq for e in events]
        == list(range(1, len(events) + 1))
        == list(range(1, record.last_seq + 1))
    )
    progress = [e.data.get("step") for e in events if e.type == "fake.progress"]
    assert progress == list(range(1, steps + 1))
    assert sum(e.type == "fake.answer" for e in events) == 1
    assert record.exit_code == 0
    return events

"""Starting a job's CLI off the event loop: the prompt arrives whole, the exit is seen without a
thread per child (and with one where the kernel has no pidfds), and a launch cancelled while
its process is being started leaves nothing running."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
from runtime_fakes import FakeProvider
from runtime_helpers import (
    Fakes,
    RuntimeFactory,
    alive,
    assert_group_gone,
    notes,
    spec,
    wait_started,
    wait_until,
)

from llmgw_jupyter.runtime import JobRecord, JobStatus, process
from llmgw_jupyter.runtime.process import StartedChild
from llmgw_jupyter.runtime.supervisor import JobSupervisor

PIPE_BYTES = 64 * 1024  # Linux's default pipe capacity: the most a first write can take


async def test_a_prompt_longer_than_the_pipe_reaches_the_cli_whole(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    prompt = "".join(chr(ord("a") + i % 26) for i in range(16 * PIPE_BYTES))
    provider = fakes.provider(
        """
        import hashlib
        start()
        note(length=len(PROMPT), sha=hashlib.sha256(PROMPT.encode()).hexdigest())
        answer("read")
        complete()
        """
    )
    rt = await runtime(providers={"fake": provider})
    job = await rt.submit(spec(prompt))
    done = await rt.wait_finished(job.id, 30)
    assert done.status is JobStatus.SUCCEEDED, done.error_message
    [seen] = notes(rt, job.id)
    assert seen["length"] == len(prompt)
    assert seen["sha"] == hashlib.sha256(prompt.encode()).hexdigest()


async def test_a_cli_that_never_reads_a_long_prompt_still_finishes(runtime: RuntimeFactory) -> None:
    provider = FakeProvider(name="deaf", argv=[sys.executable, "-I", "-S", "-c", "print(1)"])
    rt = await runtime(providers={"deaf": provider})
    job = await rt.submit(spec("x" * (4 * PIPE_BYTES), provider="deaf"))
    done = await rt.wait_finished(job.id, 30)
    assert done.is_terminal and done.exit_code == 0


async def test_a_running_job_holds_no_thread_of_its_own(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    if getattr(os, "pidfd_open", None) is None:
        pytest.skip("no pidfds on this platform: a thread per child waits instead")
    provider = fakes.provider("start(); wait_for_gate(); answer('done'); complete()")
    rt = await runtime(providers={"fake": provider}, max_running=4)
    fakes.open_gate()
    first = await rt.submit(spec())  # the launcher thread exists from here on
    assert (await rt.wait_finished(first.id, 30)).status is JobStatus.SUCCEEDED
    os.remove(fakes.env["FAKE_GATE"])
    threads = threading.active_count()
    jobs = [await rt.submit(spec(f"job {i}")) for i in range(3)]
    for job in jobs:
        await wait_started(rt, job.id)
    assert threading.active_count() == threads
    fakes.open_gate()
    for job in jobs:
        done = await rt.wait_finished(job.id, 30)
        assert done.status is JobStatus.SUCCEEDED and done.exit_code == 0


async def test_without_pidfds_exits_and_cancels_are_still_seen(
    runtime: RuntimeFactory, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    provider = fakes.provider(
        """
        start()
        if PROMPT == "hang":
            sleep_forever()
        answer("done")
        complete()
        sys.exit(3)
        """
    )
    rt = await runtime(providers={"fake": provider}, kill_grace_seconds=5)
    ended = await rt.wait_finished((await rt.submit(spec("quick"))).id, 30)
    assert ended.exit_code == 3 and ended.status is JobStatus.FAILED
    hung = await rt.submit(spec("hang"))
    started = await wait_started(rt, hung.id)
    cancelled = await rt.cancel(hung.id, "test")
    assert cancelled.status is JobStatus.CANCELLED
    assert started.pid is not None
    assert_group_gone(started.pid)


async def test_a_launch_cancelled_while_its_process_starts_leaves_nothing_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[StartedChild] = []
    entered, gate = threading.Event(), threading.Event()
    real_start = process.start_child

    def gated_start(*args: Any, **kwargs: Any) -> StartedChild:
        entered.set()
        gate.wait(30)
        child = real_start(*args, **kwargs)
        started.append(child)
        return child

    monkeypatch.setattr(process, "start_child", gated_start)
    launch = asyncio.ensure_future(
        process.spawn(["sleep", "60"], cwd=str(tmp_path), env={"PATH": os.defpath}, stdin=b"x")
    )
    await asyncio.get_running_loop().run_in_executor(None, entered.wait, 30)
    launch.cancel()  # the start is under way in the launcher thread: it cannot be taken back
    with pytest.raises(asyncio.CancelledError):
        await launch
    gate.set()
    await process.off_loop(lambda: None)  # the start, and its undo, are done in that thread
    [child] = started
    wait_until(lambda: not alive(child.popen.pid), what="the cancelled launch's process to die")


async def test_a_launch_cancelled_before_its_turn_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[StartedChild] = []
    real_start = process.start_child

    def recording_start(*args: Any, **kwargs: Any) -> StartedChild:
        child = real_start(*args, **kwargs)
        started.append(child)
        return child

    monkeypatch.setattr(process, "start_child", recording_start)
    gate = threading.Event()
    busy = asyncio.ensure_future(process.off_loop(gate.wait))  # the launcher is occupied
    launch = asyncio.ensure_future(
        process.spawn(["sleep", "60"], cwd=str(tmp_path), env={"PATH": os.defpath}, stdin=b"x")
    )
    await asyncio.sleep(0)  # the launch waits for the launcher thread
    launch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await launch
    gate.set()
    await busy
    await process.off_loop(lambda: None)
    assert started == []


def test_a_forked_child_makes_its_own_launcher_thread() -> None:
    parent_pool = process.launcher()
    assert parent_pool.submit(threading.get_ident).result(timeout=30) != threading.get_ident()
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns of forking a threaded process: the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: the parent's launcher thread does not exist here
        try:
            ran = process.launcher().submit(lambda: b"ran").result(timeout=10)
            os.write(write_end, ran if process.launcher() is not parent_pool else b"same")
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        assert answer.read() == b"ran"
    os.waitpid(pid, 0)


async def test_a_started_job_is_followed_with_exactly_its_stored_record(
    runtime: RuntimeFactory, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[JobRecord, JobRecord | None]] = []
    real_follow = JobSupervisor.follow

    async def follow(self: JobSupervisor, running: Any, record: JobRecord, *rest: Any) -> None:
        seen.append((record, self.store.get_job(record.id)))
        await real_follow(self, running, record, *rest)

    monkeypatch.setattr(JobSupervisor, "follow", follow)
    rt = await runtime(providers={"fake": fakes.provider("start(); answer('hi'); complete()")})
    done = await rt.wait_finished((await rt.submit(spec())).id, 30)
    assert done.status is JobStatus.SUCCEEDED
    [(followed, stored)] = seen
    assert followed == stored
    assert followed.status is JobStatus.RUNNING and followed.argv and followed.pid


async def test_an_exit_the_pidfd_reports_before_it_can_be_reaped_is_still_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if getattr(os, "pidfd_open", None) is None:
        pytest.skip("no pidfds on this platform")
    polls: list[int | None] = []
    real_poll = subprocess.Popen.poll

    def poll_too_early(self: subprocess.Popen[bytes]) -> int | None:
        polls.append(None if not polls else real_poll(self))
        return polls[-1]

    monkeypatch.setattr(subprocess.Popen, "poll", poll_too_early)
    child = await process.spawn(
        ["/bin/sh", "-c", "exit 7"], cwd=str(tmp_path), env={"PATH": os.defpath}, stdin=None
    )
    assert await asyncio.wait_for(child.wait_exit(), 30) == 7
    assert polls[0] is None  # the pidfd's first answer could not be reaped: a thread waited

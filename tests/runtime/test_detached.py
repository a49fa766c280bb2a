"""The detached executor: jobs run under their own supervisor process and outlive the runtime.

With the fake CLI (``llmgw_jupyter.testing.fake_cli``): a runtime that stops (or is killed)
leaves the run going, the next runtime on the same data dir follows it again with a gap-free
event sequence, settles a run that ended meanwhile, and cancel, timeouts and the output cap work
for adopted runs too. The real Codex CLI on a real Jupyter server: tests/server/
test_restart_survival.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from runtime_helpers import (
    WAIT,
    RuntimeFactory,
    alive,
    assert_fake_answer_complete,
    assert_group_gone,
    spec,
    wait_until,
)

from llmgw_jupyter.errors import ErrorCategory
from llmgw_jupyter.providers.base import Command, LaunchContext
from llmgw_jupyter.records import JobRecord, JobStatus
from llmgw_jupyter.runtime import Runtime
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.testing.fake_provider import FakeProvider


@pytest.fixture
def detached(runtime: RuntimeFactory) -> RuntimeFactory:
    """Runtimes on one data dir running the fake CLI with the detached executor."""

    async def make(**config: Any) -> Runtime:
        config.setdefault("providers", {"fake": FakeProvider()})
        config.setdefault("kill_grace_seconds", 1.0)
        return await runtime(executor="detached", **config)

    return make


async def first_progress(rt: Runtime, job_id: str) -> JobRecord:
    seq = 0
    deadline = asyncio.get_running_loop().time() + WAIT
    while asyncio.get_running_loop().time() < deadline:
        events, record = await rt.wait_for_events(job_id, seq, WAIT)
        if any(e.type in ("fake.progress", "fake.session") for e in events):
            return record
        assert not record.is_terminal, record.error_message
        seq = events[-1].seq if events else seq
    pytest.fail(f"job {job_id} printed nothing")


def supervisor_file(rt: Runtime, job_id: str) -> dict[str, Any]:
    value = json.loads((rt.job_dir(job_id) / "supervisor.json").read_text())
    assert isinstance(value, dict)
    return value


async def hanging_run(rt: Runtime) -> tuple[JobRecord, JobRecord, int]:
    """A job that runs until stopped, once it has made progress: the submitted job, its
    running record (``pid``: the supervisor) and its CLI's pid."""
    job = await rt.submit(spec("[fake:hang]"))
    record = await first_progress(rt, job.id)
    return job, record, int(supervisor_file(rt, job.id)["cli_pid"])


def assert_complete(rt: Runtime, record: JobRecord, steps: int) -> None:
    """The whole answer, gap-free events, and the session it named."""
    events = assert_fake_answer_complete(rt, record, steps)
    assert sum(e.type == "fake.session" for e in events) == 1
    assert record.session_id is not None
    assert record.usage.input_tokens and record.usage.output_tokens
    stdout = rt.job_dir(record.id) / "stdout.jsonl"
    assert record.stdout_bytes == stdout.stat().st_size


async def test_a_job_runs_under_its_own_supervisor_and_cancel_kills_its_whole_group(
    detached: RuntimeFactory,
) -> None:
    rt = await detached()
    done = await rt.wait_finished((await rt.submit(spec("hi [fake:events=2]"))).id, WAIT)
    assert_complete(rt, done, 2)
    exit_record = json.loads((rt.job_dir(done.id) / "exit.json").read_text())
    assert exit_record["exit_code"] == 0 and exit_record["stopped"] is None

    job = await rt.submit(spec("[fake:hang]"))
    record = await first_progress(rt, job.id)
    supervisor = psutil.Process(record.pid)
    cli_pid = supervisor_file(rt, job.id)["cli_pid"]
    assert supervisor.ppid() != os.getpid(), "the supervisor must not be the runtime's child"
    assert os.getsid(supervisor.pid) == supervisor.pid != os.getsid(0)
    assert os.getpgid(cli_pid) == cli_pid and psutil.Process(cli_pid).ppid() == supervisor.pid

    cancelled = await rt.cancel(job.id, "enough")
    assert cancelled.status is JobStatus.CANCELLED and cancelled.cancel_reason == "enough"
    assert_group_gone(cli_pid, [supervisor.pid])


async def test_a_stopped_runtime_leaves_the_job_running_and_the_next_one_follows_it(
    detached: RuntimeFactory,
) -> None:
    first = await detached()
    job = await first.submit(spec("long answer [fake:events=25,step_delay=0.1]"))
    record = await first_progress(first, job.id)
    await first.close()
    assert alive(record.pid or 0) or (first.job_dir(job.id) / "exit.json").exists()

    second = await detached()
    done = await second.wait_finished(job.id, WAIT)
    assert_complete(second, done, 25)
    assert done.final_message == "echo: long answer"


async def test_a_job_that_ended_while_no_runtime_was_up_is_settled_on_start(
    detached: RuntimeFactory,
) -> None:
    first = await detached()
    job = await first.submit(spec("settle me [fake:events=4,step_delay=0.2]"))
    await first_progress(first, job.id)
    await first.close()
    exit_file = first.job_dir(job.id) / "exit.json"
    wait_until(exit_file.exists, WAIT, "the supervisor to record the exit")

    second = await detached()
    done = await second.wait_finished(job.id, WAIT)
    assert_complete(second, done, 4)
    assert done.final_message == "echo: settle me"


async def test_cancel_of_an_adopted_job_kills_its_whole_group(detached: RuntimeFactory) -> None:
    first = await detached()
    job, record, cli_pid = await hanging_run(first)
    await first.close()
    assert alive(record.pid or 0) and alive(cli_pid)

    second = await detached()
    assert second.get(job.id).status is JobStatus.RUNNING  # type: ignore[union-attr]
    cancelled = await second.cancel(job.id, "adopted and cancelled")
    assert cancelled.status is JobStatus.CANCELLED
    assert_group_gone(cli_pid, [record.pid or 0])
    events = second.events(job.id, 0, 1000)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_closing_with_cancel_running_stops_detached_jobs(detached: RuntimeFactory) -> None:
    rt = await detached()
    job, record, cli_pid = await hanging_run(rt)
    await rt.close(cancel_running=True)
    assert_group_gone(cli_pid, [record.pid or 0])

    again = await detached()
    assert again.get(job.id).status is JobStatus.CANCELLED  # type: ignore[union-attr]


async def test_the_output_cap_is_enforced_by_the_supervisor(detached: RuntimeFactory) -> None:
    rt = await detached(output_cap_bytes=1500)
    done = await rt.wait_finished((await rt.submit(spec("[fake:events=200]"))).id, WAIT)
    assert done.status is JobStatus.FAILED
    assert done.error_category == ErrorCategory.OUTPUT_OVERFLOW.value
    on_disk = sum(
        (rt.job_dir(done.id) / name).stat().st_size
        for name in ("stdout.jsonl", "stderr.log")
        if (rt.job_dir(done.id) / name).exists()
    )
    assert on_disk == done.stdout_bytes + done.stderr_bytes == 1500


async def test_the_cap_holds_while_no_runtime_is_up(detached: RuntimeFactory) -> None:
    first = await detached(output_cap_bytes=1500)
    job = await first.submit(spec("[fake:events=200,step_delay=0.01]"))
    await first_progress(first, job.id)
    await first.close()
    wait_until((first.job_dir(job.id) / "exit.json").exists, WAIT, "the capped run to end")

    second = await detached(output_cap_bytes=1500)
    done = await second.wait_finished(job.id, WAIT)
    assert done.status is JobStatus.FAILED
    assert done.error_category == ErrorCategory.OUTPUT_OVERFLOW.value
    assert done.stdout_bytes + done.stderr_bytes == 1500


async def test_a_wall_clock_timeout_stops_the_whole_group(detached: RuntimeFactory) -> None:
    rt = await detached()
    job = await rt.submit(spec("[fake:hang]", timeout_seconds=1))
    record = await first_progress(rt, job.id)
    cli_pid = supervisor_file(rt, job.id)["cli_pid"]
    done = await rt.wait_finished(job.id, WAIT)
    assert done.status is JobStatus.TIMED_OUT
    assert_group_gone(cli_pid, [record.pid or 0])


# A runtime in its own process: one slow detached job; prints its id once it printed something.
CHILD_RUNTIME = """
import asyncio, json, sys
from llmgw_jupyter.runtime import JobSpec, Runtime, RuntimeConfig
from llmgw_jupyter.testing.fake_provider import FakeProvider


async def main() -> None:
    rt = Runtime(RuntimeConfig(data_dir=sys.argv[1], providers={"fake": FakeProvider()},
                               isolation="off", executor="detached"))
    await rt.start()
    job = await rt.submit(JobSpec("fake", "fake_request_async", "exec",
                                  {"prompt": "killed runtime [fake:events=20,step_delay=0.1]"}))
    seq = 0
    while True:
        events, record = await rt.wait_for_events(job.id, seq, 30)
        if any(e.type == "fake.progress" for e in events):
            break
        seq = events[-1].seq if events else seq
    print(json.dumps({"job": job.id, "pid": record.pid}), flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
"""


async def test_a_killed_runtime_loses_nothing(detached: RuntimeFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    script = tmp_path / "child_runtime.py"
    script.write_text(CHILD_RUNTIME)
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(data_dir), stdout=asyncio.subprocess.PIPE
    )
    try:
        line = await asyncio.wait_for(child.stdout.readline(), WAIT)  # type: ignore[union-attr]
        assert line, "the child runtime died before reporting its job"
        info = json.loads(line)
    finally:
        child.kill()  # SIGKILL: no shutdown code runs
        await child.wait()

    rt = await detached(data_dir=data_dir)
    done = await rt.wait_finished(info["job"], WAIT)
    assert_complete(rt, done, 20)
    assert done.final_message == "echo: killed runtime"
    wait_until(lambda: not alive(info["pid"]), WAIT, "the supervisor to exit")


async def test_a_run_whose_start_was_never_recorded_is_stopped(
    detached: RuntimeFactory, tmp_path: Path
) -> None:
    """The runtime died between the supervisor's answer and the job's ``running`` row."""
    first = await detached()
    job, record, cli_pid = await hanging_run(first)
    await first.close()
    db = Database(tmp_path / "data" / "llmgw.sqlite3")
    db.execute("UPDATE jobs SET status = 'queued', pid = NULL WHERE id = ?", (job.id,))
    db.close()

    second = await detached()
    done = second.get(job.id)
    assert done is not None and done.status is JobStatus.INTERRUPTED
    assert "as the job started" in (done.error_message or "")
    assert_group_gone(cli_pid, [record.pid or 0])


async def test_an_isolated_job_runs_in_the_boundary_under_its_supervisor(
    detached: RuntimeFactory,
) -> None:
    """bubblewrap is the supervisor's child: its --die-with-parent refers to the supervisor."""
    rt = await detached(isolation="bwrap")
    done = await rt.wait_finished((await rt.submit(spec("inside"))).id, WAIT)
    assert done.status is JobStatus.SUCCEEDED, done.error_message
    assert done.final_message == "echo: inside"

    job, record, cli_pid = await hanging_run(rt)
    boundary = psutil.Process(cli_pid)
    assert boundary.name() == "bwrap" and boundary.ppid() == record.pid
    cancelled = await rt.cancel(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert_group_gone(cli_pid, [record.pid or 0])


async def test_a_run_no_runtime_watches_is_stopped_at_the_wall_clock_limit(
    detached: RuntimeFactory,
) -> None:
    """The supervisor's own backstop: the job then ends timed out, not as a CLI failure."""
    first = await detached(wall_timeout_seconds=3, kill_grace_seconds=0.5)
    job, record, cli_pid = await hanging_run(first)
    await first.close()
    exit_file = first.job_dir(job.id) / "exit.json"
    wait_until(exit_file.exists, WAIT, "the supervisor to stop the run at its limit")
    assert json.loads(exit_file.read_text())["stopped"] == "wall_timeout"
    assert_group_gone(cli_pid, [record.pid or 0])

    second = await detached(wall_timeout_seconds=3, kill_grace_seconds=0.5)
    done = await second.wait_finished(job.id, WAIT)
    assert done.status is JobStatus.TIMED_OUT
    assert done.error_category == ErrorCategory.TIMEOUT.value


async def test_a_local_runtime_follows_detached_runs_and_leaves_them_running(
    detached: RuntimeFactory, runtime: RuntimeFactory
) -> None:
    first = await detached()
    job, record, cli_pid = await hanging_run(first)
    await first.close()

    local = await runtime(providers={"fake": FakeProvider()}, executor="local")
    assert local.get(job.id).status is JobStatus.RUNNING  # type: ignore[union-attr]
    await local.close()
    assert alive(record.pid or 0) and alive(cli_pid)

    last = await detached()
    cancelled = await last.cancel(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert_group_gone(cli_pid, [record.pid or 0])


class MissingCli(FakeProvider):
    """The fake provider pointing at a CLI that is not there."""

    def build_command(
        self, kind: str, args: dict[str, Any], job_dir: Path, context: LaunchContext
    ) -> Command:
        command = super().build_command(kind, args, job_dir, context)
        return dataclasses.replace(command, argv=["/nowhere/fake-cli"])


async def test_a_cli_that_cannot_start_fails_the_job_as_a_spawn_error(
    detached: RuntimeFactory,
) -> None:
    rt = await detached(providers={"fake": MissingCli()})
    done = await rt.wait_finished((await rt.submit(spec("hello"))).id, WAIT)
    assert done.status is JobStatus.FAILED
    assert done.error_category == ErrorCategory.SPAWN_ERROR.value
    assert "/nowhere/fake-cli" in (done.error_message or "")
    # The host is still there for the next job.
    rt.providers["fake"] = FakeProvider()
    again = await rt.wait_finished((await rt.submit(spec("next"))).id, WAIT)
    assert again.status is JobStatus.SUCCEEDED and again.final_message == "echo: next"


async def test_a_prompt_larger_than_a_pipe_buffer_reaches_the_cli_whole(
    detached: RuntimeFactory,
) -> None:
    rt = await detached()
    prompt = "x" * 99_000 + " é"  # over a 64 KiB pipe buffer (the limit is 100000 characters)
    done = await rt.wait_finished((await rt.submit(spec(prompt))).id, WAIT)
    assert done.status is JobStatus.SUCCEEDED, done.error_message
    assert done.final_message == f"echo: {prompt}"


async def test_an_adopted_run_keeps_the_wall_clock_it_started_with(
    detached: RuntimeFactory,
) -> None:
    """The limit counts from the job's start, not from its adoption by a restarted runtime: a
    run that used up its time under the first runtime is stopped on adoption, not a whole
    limit later."""
    limit = 4.0
    first = await detached(wall_timeout_seconds=600)
    job = await first.submit(spec("[fake:hang]"))
    record = await first_progress(first, job.id)
    assert record.started_at is not None
    await asyncio.sleep(limit)  # the run uses up the second runtime's whole limit meanwhile
    await first.close()
    adopted_at = time.time()
    second = await detached(wall_timeout_seconds=limit, kill_grace_seconds=0.5)
    done = await second.wait_finished(job.id, WAIT)
    assert done.status is JobStatus.TIMED_OUT
    assert done.finished_at is not None
    assert done.finished_at - adopted_at < limit - 1  # a fresh clock would wait the whole limit

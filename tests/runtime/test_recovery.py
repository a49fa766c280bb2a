"""Durability: restart after a SIGKILLed runtime, the data-dir lock, shutdown and retention."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runtime_fakes import FakeProvider, this_dir
from runtime_helpers import (
    WAIT,
    Fakes,
    RuntimeFactory,
    alive,
    assert_group_gone,
    group_members,
    notes,
    spec,
    wait_for_event,
    wait_started,
)

from llmgw_jupyter.errors import ErrorCategory, GatewayError, NotFoundError
from llmgw_jupyter.providers.base import Provider
from llmgw_jupyter.runtime import JobStatus
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.jobs import JobStore

HANG = """
log("start " + PROMPT)
start()
note(progress="half way")
sleep_forever()
"""

# A runtime in its own process: one fake job running, one queued; prints their ids, then idles.
CHILD_RUNTIME = """
import asyncio, json, sys
from pathlib import Path

data_dir, script, env, helpers = sys.argv[1:5]
sys.path.insert(0, helpers)
from runtime_fakes import FakeProvider
from llmgw_jupyter.runtime import JobSpec, Runtime, RuntimeConfig


async def main() -> None:
    provider = FakeProvider(Path(script), env=json.loads(env))
    rt = Runtime(
        RuntimeConfig(
            data_dir=data_dir, providers={"fake": provider}, max_running=1, isolation="off"
        )
    )
    await rt.start()
    running = await rt.submit(JobSpec("fake", "codex_request_async", "exec", {"prompt": "first"}))
    queued = await rt.submit(JobSpec("fake", "codex_request_async", "exec", {"prompt": "second"}))
    seq = 0
    while True:  # until the fake's note is stored: output exists to be recovered
        events, record = await rt.wait_for_events(running.id, seq, 30)
        if any(e.type == "item.completed" for e in events):
            break
        seq = events[-1].seq if events else seq
    print(json.dumps({"running": running.id, "queued": queued.id, "pid": record.pid}), flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
"""


async def test_restart_after_a_killed_runtime_interrupts_its_jobs_and_reruns_nothing(
    runtime: RuntimeFactory, fakes: Fakes, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    provider = fakes.provider(HANG)
    child_script = tmp_path / "child_runtime.py"
    child_script.write_text(CHILD_RUNTIME)
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(child_script), str(data_dir), provider.argv[-1],
        json.dumps(fakes.env), this_dir(),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        line = await asyncio.wait_for(child.stdout.readline(), WAIT)  # type: ignore[union-attr]
        assert line, "the child runtime died before reporting its jobs"
        info = json.loads(line)
        pgid = info["pid"]
        assert group_members(pgid), "the fake CLI should be running"

        # While the child runtime lives, the data dir is locked against a second runtime.
        with pytest.raises(GatewayError) as caught:
            await runtime(data_dir=data_dir, providers={"fake": provider})
        assert caught.value.category is ErrorCategory.CONFLICT
        assert f"in use by another llmgw runtime (pid {child.pid})" in caught.value.message
    finally:
        child.kill()
        await child.wait()
    assert group_members(pgid), "the orphaned CLI outlives its runtime until recovery"

    fresh = FakeProvider(Path(provider.argv[-1]), env=fakes.env)
    rt = await runtime(data_dir=data_dir, providers={"fake": fresh})

    first, second = rt.get(info["running"]), rt.get(info["queued"])
    assert first is not None and second is not None
    assert first.status is JobStatus.INTERRUPTED
    assert first.error_message is not None
    assert "while the job was running" in first.error_message
    assert f"its process {pgid} was still alive and was stopped" in first.error_message
    assert first.finished_at is not None and first.pid == pgid
    assert second.status is JobStatus.INTERRUPTED
    assert second.error_message is not None and "not re-run" in second.error_message
    assert second.started_at is None
    assert_group_gone(pgid)

    # What the job printed before the crash is kept and readable.
    page = rt.read_output(first.id)
    assert "half way" in page.data and page.size == first.stdout_bytes > 0
    assert notes(rt, first.id) == [{"type": "note", "progress": "half way"}]
    assert rt.events(first.id)[-1].data == {"status": "interrupted"}

    # Nothing was re-run: no command built, no new start logged, nothing queued or running.
    assert fresh.commands == []
    assert fakes.log() == ["start first"]
    assert rt.summary()["running"] == rt.summary()["queued"] == 0


async def test_recovery_never_kills_a_process_that_merely_reuses_the_pid(
    runtime: RuntimeFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    bystander = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", "import time\nwhile True: time.sleep(3600)"],
        start_new_session=True,
    )
    try:
        store = JobStore(Database(data_dir / "llmgw.sqlite3"))
        now = time.time()
        values = {
            "id": "stale", "provider": "fake", "tool": "codex_request_async", "kind": "exec",
            "caller": "owner", "status": "queued", "args_json": '{"prompt": "x"}',
            "created_at": now, "queued_at": now, "updated_at": now,
        }  # fmt: skip
        store.insert_job(values, (now, "job.status", "queued", {"status": "queued"}))
        # Running under a dead runtime, with the bystander's pid but another start time.
        store.transition(
            "stale", JobStatus.RUNNING, now, pid=bystander.pid, pid_start_time=now - 86400
        )
        store.db.close()

        rt = await runtime(data_dir=data_dir, providers={})

        record = rt.get("stale")
        assert record is not None and record.status is JobStatus.INTERRUPTED
        assert record.error_message is not None and "was stopped" not in record.error_message
        assert alive(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait()


async def test_a_second_runtime_on_a_locked_data_dir_is_refused_clearly(
    runtime: RuntimeFactory, tmp_path: Path
) -> None:
    first = await runtime()

    with pytest.raises(GatewayError) as caught:
        await runtime()

    assert caught.value.category is ErrorCategory.CONFLICT
    assert str(tmp_path / "data") in caught.value.message
    assert f"in use by another llmgw runtime (pid {os.getpid()})" in caught.value.message
    await first.close()
    reopened = await runtime()  # the lock goes with the runtime
    assert reopened.summary()["running"] == 0


@pytest.mark.parametrize("cancel_running", [False, True])
async def test_close_ends_running_and_queued_jobs_and_kills_their_groups(
    runtime: RuntimeFactory, fakes: Fakes, tmp_path: Path, cancel_running: bool
) -> None:
    provider = fakes.provider(HANG)
    rt = await runtime(providers={"fake": provider}, max_running=1)
    running = await rt.submit(spec("first"))
    started = await wait_started(rt, running.id)
    await wait_for_event(rt, running.id, lambda e: e.data.get("item", {}).get("type") == "note")
    queued = await rt.submit(spec("second"))
    assert started.pid is not None

    await rt.close(cancel_running=cancel_running)

    assert_group_gone(started.pid)
    rt = await runtime(providers={"fake": provider})
    first, second = rt.get(running.id), rt.get(queued.id)
    assert first is not None and second is not None
    expected = JobStatus.CANCELLED if cancel_running else JobStatus.INTERRUPTED
    assert first.status is second.status is expected
    assert first.error_message is not None and "while the job was running" in first.error_message
    assert second.started_at is None
    assert notes(rt, first.id) == [{"type": "note", "progress": "half way"}]
    assert fakes.log() == ["start first"]


async def test_prune_deletes_old_finished_jobs_with_their_output_and_keeps_the_rest(
    runtime: RuntimeFactory, echo_provider: Provider
) -> None:
    quick = echo_provider
    rt = await runtime(providers={"fake": quick}, retention_seconds=3600)
    old = await rt.wait_finished((await rt.submit(spec("old"))).id, WAIT)
    held = await rt.submit(spec("held", hold=True))
    assert old.status is JobStatus.SUCCEEDED and old.finished_at is not None
    assert rt.job_dir(old.id).is_dir()

    assert rt.prune(now=old.finished_at + 3599) == 0  # not old enough yet
    assert rt.prune(now=old.finished_at + 3601) == 1

    assert rt.get(old.id) is None
    assert not rt.job_dir(old.id).exists()
    assert rt.events(old.id) == []
    with pytest.raises(NotFoundError):
        rt.read_output(old.id)
    kept = rt.get(held.id)
    assert kept is not None and kept.status is JobStatus.AWAITING_APPROVAL


async def test_a_runtime_prunes_expired_jobs_when_it_starts(
    runtime: RuntimeFactory, echo_provider: Provider
) -> None:
    quick = echo_provider
    rt = await runtime(providers={"fake": quick})
    job = await rt.wait_finished((await rt.submit(spec())).id, WAIT)
    assert job.status is JobStatus.SUCCEEDED
    await rt.close()

    kept = await runtime(providers={"fake": quick}, retention_seconds=None)
    assert kept.get(job.id) is not None and kept.prune(now=time.time() + 1e9) == 0
    await kept.close()
    pruning = await runtime(providers={"fake": quick}, retention_seconds=1e-6)

    assert pruning.get(job.id) is None
    assert not pruning.job_dir(job.id).exists()

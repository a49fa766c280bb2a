"""The executor seam: another executor runs jobs through the same scheduler, supervisor and store,
and a run it can follow again after a restart ends as it really did.

The executor here is scripted in memory (no process at all): what it proves is that nothing
outside ``runtime/executor.py``'s contract is assumed of how a job runs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from runtime_fakes import FakeProvider
from runtime_helpers import WAIT, spec

from llmgw_jupyter.errors import ErrorCategory
from llmgw_jupyter.records import JobStatus
from llmgw_jupyter.runtime import Runtime, RuntimeConfig
from llmgw_jupyter.runtime.executor import ByteStream, ExecutionRef, LaunchRequest
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.jobs import JobStore


def jsonl(*events: dict[str, object]) -> bytes:
    return b"".join(json.dumps(event).encode() + b"\n" for event in events)


START = jsonl({"type": "thread.started", "thread_id": "scripted-thread"}, {"type": "turn.started"})
FINISH = jsonl(
    {"type": "item.completed", "item": {"id": "i0", "type": "agent_message", "text": "hi"}},
    {"type": "turn.completed", "usage": {"input_tokens": 3, "output_tokens": 1}},
)


class ScriptedStream:
    """Bytes the test feeds; ``b""`` once the test ends the stream."""

    def __init__(self) -> None:
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()

    def feed(self, data: bytes) -> None:
        self._chunks.put_nowait(data)

    async def read(self, n: int = -1) -> bytes:
        return await self._chunks.get()


class ScriptedExecution:
    persists_output = False

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.ref = ExecutionRef(None, None, external_id="scripted-1")
        self.out, self.err = ScriptedStream(), ScriptedStream()
        self.streams: Mapping[str, ByteStream] = {"stdout": self.out, "stderr": self.err}
        self.exit_code: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.stops: list[float] = []
        self.releases = 0
        self.release_error: Exception | None = None

    def end(self, code: int) -> None:
        self.out.feed(b"")
        self.err.feed(b"")
        if not self.exit_code.done():
            self.exit_code.set_result(code)

    async def wait(self) -> int | None:
        return await asyncio.shield(self.exit_code)

    async def stop(self, grace_seconds: float) -> None:
        self.stops.append(grace_seconds)
        self.end(-15)

    def release(self) -> None:
        self.releases += 1
        if self.release_error is not None:
            raise self.release_error


class ScriptedExecutor:
    name = "scripted"

    def __init__(self) -> None:
        self.requests: list[LaunchRequest] = []
        self.launched: asyncio.Queue[ScriptedExecution] = asyncio.Queue()
        self.reattachable: ScriptedExecution | None = None
        self.orphans: list[ExecutionRef] = []

    async def launch(self, request: LaunchRequest) -> ScriptedExecution:
        self.requests.append(request)
        execution = ScriptedExecution([*request.argv, "--scripted"])
        self.launched.put_nowait(execution)
        return execution

    def stop_orphan(self, ref: ExecutionRef) -> bool:
        self.orphans.append(ref)
        return False

    def reattach(self, ref: ExecutionRef, job_dir: Path) -> ScriptedExecution | None:
        return self.reattachable


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[tuple[Runtime, ScriptedExecutor]]:
    executor = ScriptedExecutor()
    provider = FakeProvider(argv=["/nowhere/fake-cli", "exec"], env={"FAKE_ONLY": "1"})
    rt = Runtime(
        RuntimeConfig(
            data_dir=tmp_path / "data",
            providers={"fake": provider},
            isolation="off",
            kill_grace_seconds=0.5,
        ),
        executor=executor,
    )
    await rt.start()
    yield rt, executor
    await rt.close(cancel_running=True)


async def test_another_executor_runs_jobs_through_the_same_scheduler_and_store(
    scripted: tuple[Runtime, ScriptedExecutor],
) -> None:
    rt, executor = scripted
    job = await rt.submit(spec("say hi"))
    execution = await asyncio.wait_for(executor.launched.get(), WAIT)
    request = executor.requests[0]
    assert request.argv == ["/nowhere/fake-cli", "exec"] and request.stdin == b"say hi"
    assert request.env["FAKE_ONLY"] == "1" and not request.isolated
    execution.out.feed(START)
    execution.err.feed(b"a warning\n")
    execution.out.feed(FINISH)
    execution.end(0)

    done = await rt.wait_finished(job.id, WAIT)
    assert done.status is JobStatus.SUCCEEDED, done.error_message
    assert done.final_message == "hi" and done.session_id == "scripted-thread"
    assert done.argv == ["/nowhere/fake-cli", "exec", "--scripted"]  # what the executor ran
    assert done.pid is None  # this executor has no local process
    assert done.stdout_bytes == len(START + FINISH) and done.stderr_bytes == len(b"a warning\n")
    assert rt.read_output(job.id).data.encode() == START + FINISH  # the runtime wrote it
    types = [e.type for e in rt.events(job.id)]
    assert types[-3:] == ["item.completed", "turn.completed", "job.status"]
    assert execution.releases == 1 and execution.stops == []


async def test_a_cancel_stops_the_execution_with_the_grace_and_releases_it_once(
    scripted: tuple[Runtime, ScriptedExecutor],
) -> None:
    rt, executor = scripted
    job = await rt.submit(spec("long"))
    execution = await asyncio.wait_for(executor.launched.get(), WAIT)
    execution.out.feed(START)

    done = await rt.cancel(job.id, "changed my mind")
    assert done.status is JobStatus.CANCELLED and done.cancel_reason == "changed my mind"
    assert execution.stops == [0.5] and execution.releases == 1


async def test_a_failure_inside_the_runtime_never_leaves_a_job_running(
    scripted: tuple[Runtime, ScriptedExecutor], caplog: pytest.LogCaptureFixture
) -> None:
    rt, executor = scripted
    job = await rt.submit(spec("boom"))
    execution = await asyncio.wait_for(executor.launched.get(), WAIT)
    execution.release_error = RuntimeError("a bug in an executor")
    execution.out.feed(START)
    execution.end(0)

    done = await rt.wait_finished(job.id, WAIT)
    assert done.status is JobStatus.FAILED and done.error_category is ErrorCategory.INTERNAL
    assert "output so far is kept" in (done.error_message or "")
    assert "a bug in an executor" in caplog.text  # the details are in the server log


async def test_a_run_the_executor_follows_again_after_a_restart_ends_as_it_really_did(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    # What a runtime that is gone left behind: a running job, its first events and output.
    db = Database(data_dir / "llmgw.sqlite3")
    store = JobStore(db)
    now = time.time()
    values = {
        "id": "left1", "provider": "fake", "tool": "codex_request_async", "kind": "exec",
        "caller": "owner", "status": "queued", "args_json": '{"prompt": "p"}',
        "created_at": now, "queued_at": now, "updated_at": now,
    }  # fmt: skip
    store.insert_job(values, (now, "job.status", "queued", {"status": "queued"}))
    store.transition("left1", JobStatus.RUNNING, now, started_at=now)
    store.append_events("left1", [(now, "thread.started", "", {}), (now, "turn.started", "", {})])
    db.close()
    job_dir = data_dir / "jobs" / "left1"
    job_dir.mkdir(parents=True, mode=0o700)
    (job_dir / "stdout.jsonl").write_bytes(START)

    executor = ScriptedExecutor()
    rt = Runtime(
        RuntimeConfig(
            data_dir=data_dir, providers={"fake": FakeProvider(argv=["x"])}, isolation="off"
        ),
        executor=executor,
    )
    loop_execution = ScriptedExecution(["x"])
    executor.reattachable = loop_execution
    await rt.start()
    try:
        loop_execution.out.feed(FINISH)
        loop_execution.end(0)
        done = await rt.wait_finished("left1", WAIT)
        assert done.status is JobStatus.SUCCEEDED, done.error_message
        assert done.final_message == "hi"
        assert executor.orphans == []  # followed, not stopped
        seqs = [e.seq for e in rt.events("left1", 0, 1000)]
        assert seqs == list(range(1, len(seqs) + 1))  # no event lost or repeated
        after_restart = [e.type for e in rt.events("left1", 4)]  # 1-4: queued, running, 2 stored
        assert after_restart == ["item.completed", "turn.completed", "job.status"]
        assert (job_dir / "stdout.jsonl").read_bytes() == START + FINISH
        assert done.stdout_bytes == len(START + FINISH)
    finally:
        await rt.close()

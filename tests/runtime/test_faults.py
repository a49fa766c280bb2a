"""How jobs end when the CLI misbehaves: crashes, hangs, floods, stubborn processes."""

from __future__ import annotations

import time

import pytest
from runtime_fakes import FakeProvider
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

from llmgw_jupyter.errors import ErrorCategory, ExecutableNotFoundError, GatewayError
from llmgw_jupyter.runtime import JobStatus

HANG = """
start()
note(progress="working")
sleep_forever()
"""


async def test_crash_is_failed_with_exit_code_and_stderr_message(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    provider = fakes.provider(
        """
        start()
        sys.stderr.write("fatal: the fake CLI fell over\\n")
        sys.exit(3)
        """
    )
    rt = await runtime(providers={"fake": provider})

    done = await rt.wait_finished((await rt.submit(spec())).id, WAIT)

    assert done.status is JobStatus.FAILED
    assert done.exit_code == 3
    assert done.error_category is ErrorCategory.CLI_ERROR
    assert done.error_message is not None
    assert "code 3" in done.error_message and "fatal: the fake CLI fell over" in done.error_message
    assert rt.read_output(done.id, "stderr").data == "fatal: the fake CLI fell over\n"
    assert done.stderr_bytes == len("fatal: the fake CLI fell over\n")


async def test_exit_zero_without_turn_completed_is_not_a_success(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    provider = fakes.provider(
        """
        start()
        answer("half an answer")
        """
    )
    rt = await runtime(providers={"fake": provider})

    done = await rt.wait_finished((await rt.submit(spec())).id, WAIT)

    assert done.status is JobStatus.FAILED
    assert done.exit_code == 0
    assert done.error_category is ErrorCategory.CLI_ERROR
    assert done.error_message is not None and "turn.completed" in done.error_message
    assert done.final_message == "half an answer"  # what arrived is kept


async def test_a_fake_that_completes_the_turn_succeeds_with_its_answer_and_usage(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    """The baseline the fault tests depart from: the fake CLI protocol itself works."""
    provider = fakes.provider(
        """
        start("thread-42")
        answer("you said: " + PROMPT)
        complete(input_tokens=7, output_tokens=3)
        """
    )
    rt = await runtime(providers={"fake": provider})

    done = await rt.wait_finished((await rt.submit(spec("ping"))).id, WAIT)

    assert done.status is JobStatus.SUCCEEDED, done.error_message
    assert done.final_message == "you said: ping"
    assert (done.session_id, done.exit_code) == ("thread-42", 0)
    assert (done.usage.input_tokens, done.usage.output_tokens) == (7, 3)


async def test_a_hang_hits_the_idle_timeout_and_its_group_is_killed(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    rt = await runtime(providers={"fake": fakes.provider(HANG)}, idle_timeout_seconds=1.0)
    job = await rt.submit(spec())
    running = await wait_started(rt, job.id)
    assert running.pid is not None

    done = await rt.wait_finished(job.id, WAIT)

    assert done.status is JobStatus.TIMED_OUT
    assert done.error_category is ErrorCategory.TIMEOUT
    assert done.error_message == "no output for 1 s (idle timeout)"
    assert done.started_at is not None and done.finished_at is not None
    assert done.finished_at - done.started_at >= 1.0
    assert notes(rt, job.id) == [{"type": "note", "progress": "working"}]  # output kept
    assert_group_gone(running.pid)


async def test_a_job_that_keeps_talking_hits_its_own_wall_clock_timeout(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    chatty = """
    start()
    while True:
        note(tick=True)
        time.sleep(0.05)
    """
    rt = await runtime(providers={"fake": fakes.provider(chatty)}, idle_timeout_seconds=1.0)
    job = await rt.submit(spec(timeout_seconds=2.0))
    running = await wait_started(rt, job.id)
    assert running.pid is not None

    done = await rt.wait_finished(job.id, WAIT)

    assert done.status is JobStatus.TIMED_OUT
    assert done.error_category is ErrorCategory.TIMEOUT
    assert done.error_message is not None and "wall-clock" in done.error_message
    assert "ran longer than 2 s" in done.error_message
    assert done.started_at is not None and done.finished_at is not None
    assert done.finished_at - done.started_at >= 2.0  # outlived the 1 s idle limit: talking
    assert len(notes(rt, job.id)) > 5
    assert_group_gone(running.pid)


async def test_an_output_flood_fails_at_the_cap_and_keeps_exactly_the_cap(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    flood = """
    start()
    line = json.dumps({"type": "item.completed", "item": {"type": "note", "pad": "x" * 1000}})
    while True:
        sys.stdout.write(line + "\\n")
    """
    cap = 200_000
    rt = await runtime(providers={"fake": fakes.provider(flood)}, output_cap_bytes=cap)
    job = await rt.submit(spec())

    done = await rt.wait_finished(job.id, WAIT)

    assert done.status is JobStatus.FAILED
    assert done.error_category is ErrorCategory.OUTPUT_OVERFLOW
    assert done.error_message is not None and str(cap) in done.error_message
    assert done.stdout_bytes + done.stderr_bytes == cap
    assert (rt.job_dir(job.id) / "stdout.jsonl").stat().st_size == done.stdout_bytes == cap
    page = rt.read_output(job.id, "stdout", offset=cap - 100, limit=1000)
    assert page.eof and page.next_offset == cap
    # Only whole lines inside the cap became events.
    assert 150 < len(notes(rt, job.id)) < cap // 1000
    assert done.pid is not None
    assert_group_gone(done.pid)


async def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    # The handler writes with os.write: a buffered write could re-enter an interrupted one.
    stubborn = """
    line = json.dumps({"type": "item.completed", "item": {"type": "note", "signal": "SIGTERM"}})
    signal.signal(signal.SIGTERM, lambda signum, frame: os.write(1, line.encode() + b"\\n"))
    start()
    note(ready=True)
    sleep_forever()
    """
    grace = 1.0
    rt = await runtime(providers={"fake": fakes.provider(stubborn)}, kill_grace_seconds=grace)
    job = await rt.submit(spec())
    _, running = await wait_for_event(rt, job.id, lambda e: "ready" in e.data.get("item", {}))
    assert running.pid is not None

    begun = time.monotonic()
    done = await rt.cancel(job.id)
    took = time.monotonic() - begun

    assert done.status is JobStatus.CANCELLED
    assert {"type": "note", "signal": "SIGTERM"} in notes(rt, job.id)  # it got SIGTERM first...
    assert done.exit_code == -9  # ...and died of SIGKILL
    assert grace <= took < grace + 10
    assert_group_gone(running.pid)


@pytest.mark.parametrize("holds_stdout", [True, False], ids=["holds-stdout", "detached-stdio"])
async def test_a_grandchild_left_behind_by_a_finished_cli_dies_with_the_group(
    runtime: RuntimeFactory, fakes: Fakes, holds_stdout: bool
) -> None:
    leaver = f"""
    stdio = None if {holds_stdout} else subprocess.DEVNULL
    child = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", "import time\\nwhile True: time.sleep(3600)"],
        stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio,
    )
    start()
    note(grandchild=child.pid)
    answer("done")
    complete()
    """
    rt = await runtime(providers={"fake": fakes.provider(leaver)})
    job = await rt.submit(spec())

    done = await rt.wait_finished(job.id, WAIT)

    assert done.status is JobStatus.SUCCEEDED, done.error_message
    assert done.started_at is not None and done.finished_at is not None
    assert done.finished_at - done.started_at < 10  # not held open by the grandchild's pipe
    [note] = notes(rt, job.id)
    assert done.pid is not None
    assert_group_gone(done.pid, [note["grandchild"]])


async def test_cancel_kills_a_grandchild_that_ignores_sigterm_without_waiting_the_grace(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    # The grandchild shares stdout and announces itself once SIGTERM is ignored.
    parent = """
    start()
    code = (
        "import json, os, signal, time\\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
        "print(json.dumps({'type': 'item.completed',"
        " 'item': {'type': 'note', 'grandchild': os.getpid()}}), flush=True)\\n"
        "while True: time.sleep(3600)"
    )
    subprocess.Popen([sys.executable, "-I", "-S", "-c", code])
    sleep_forever()
    """
    rt = await runtime(providers={"fake": fakes.provider(parent)}, kill_grace_seconds=20)
    job = await rt.submit(spec())
    event, running = await wait_for_event(rt, job.id, lambda e: "grandchild" in str(e.data))
    grandchild = event.data["item"]["grandchild"]
    assert running.pid is not None and alive(grandchild)
    assert {p.pid for p in group_members(running.pid)} == {running.pid, grandchild}

    begun = time.monotonic()
    done = await rt.cancel(job.id)

    assert done.status is JobStatus.CANCELLED
    # The leader died of SIGTERM, so the group got SIGKILL at once, not after 20 s.
    assert time.monotonic() - begun < 10
    assert_group_gone(running.pid, [grandchild])


async def test_a_cli_that_cannot_be_started_fails_as_spawn_error(runtime: RuntimeFactory) -> None:
    provider = FakeProvider(argv=["/nonexistent/fake-cli", "--json"])
    rt = await runtime(providers={"fake": provider})

    done = await rt.wait_finished((await rt.submit(spec())).id, WAIT)

    assert done.status is JobStatus.FAILED
    assert done.error_category is ErrorCategory.SPAWN_ERROR
    assert done.error_message is not None and "/nonexistent/fake-cli" in done.error_message
    assert done.started_at is None and done.pid is None


async def test_a_provider_that_is_not_ready_refuses_at_submit_and_fails_a_released_job(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    missing = ExecutableNotFoundError("fake CLI not installed: run `make fake`")
    rt = await runtime(providers={"fake": fakes.provider(HANG, ready_error=missing)})

    with pytest.raises(GatewayError) as caught:
        await rt.submit(spec())
    assert caught.value.message == "fake CLI not installed: run `make fake`"
    assert rt.list_jobs()[1] == 0

    held = await rt.submit(spec(hold=True))  # approval comes first; readiness on release
    assert held.status is JobStatus.AWAITING_APPROVAL
    released = await rt.release(held.id)
    assert released.status is JobStatus.FAILED
    assert released.error_category is ErrorCategory.SPAWN_ERROR
    assert released.error_message == "fake CLI not installed: run `make fake`"


async def test_events_per_job_are_capped_but_the_job_still_completes(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    talkative = """
    start()
    for i in range(50):
        note(i=i)
    answer("finished")
    complete()
    """
    rt = await runtime(providers={"fake": fakes.provider(talkative)}, max_events_per_job=10)

    done = await rt.wait_finished((await rt.submit(spec())).id, WAIT)

    assert done.status is JobStatus.SUCCEEDED, done.error_message
    assert done.final_message == "finished" and done.usage.input_tokens == 10
    parsed = [e for e in rt.events(done.id, 0, 1000) if e.type != "job.status"]
    assert len(parsed) == 10
    assert [e.type for e in rt.events(done.id, 0, 1000)][-1] == "job.status"
    assert "finished" in rt.read_output(done.id, limit=1_000_000).data  # the file has it all


async def test_an_over_long_line_is_kept_on_disk_but_not_parsed(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    long_line = """
    start()
    sys.stdout.write('{"type": "item.completed", "item": {"type": "note", "pad": "'
                     + "y" * 1_500_000 + '"}}\\n')
    answer("after the long line")
    complete()
    """
    rt = await runtime(providers={"fake": fakes.provider(long_line)})

    done = await rt.wait_finished((await rt.submit(spec())).id, WAIT)

    assert done.status is JobStatus.SUCCEEDED, done.error_message
    assert done.final_message == "after the long line"
    assert notes(rt, done.id) == []
    assert done.stdout_bytes > 1_500_000

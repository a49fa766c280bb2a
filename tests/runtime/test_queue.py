"""Scheduling: limits, the bounded FIFO queue, holds, cancels, idempotency and wake-ups."""

from __future__ import annotations

import asyncio
import time

import pytest
from runtime_helpers import WAIT, Fakes, RuntimeFactory, current, spec, wait_started

from llmgw_jupyter.errors import ErrorCategory, GatewayError, InvalidInputError, NotFoundError
from llmgw_jupyter.providers.base import Provider
from llmgw_jupyter.runtime import JobChange, JobRecord, JobSpec, JobStatus, Runtime
from llmgw_jupyter.runtime.notifier import RESYNC

# Runs until the test opens the gate; logs its start so tests can see what ran and in which order.
GATED = """
log("start " + PROMPT)
start()
wait_for_gate()
answer("done: " + PROMPT)
complete()
"""
QUICK = """
log("start " + PROMPT)
start()
answer("done: " + PROMPT)
complete()
"""


async def finish_all(rt: Runtime, jobs: list[JobRecord]) -> list[JobRecord]:
    done = [await rt.wait_finished(job.id, WAIT) for job in jobs]
    assert all(d.is_terminal for d in done), [d.status.value for d in done]
    return done


def max_overlap(records: list[JobRecord]) -> int:
    """Most jobs running at one instant, from their persisted start/finish times."""
    spans: list[tuple[float, float]] = []
    for r in records:
        assert r.started_at is not None and r.finished_at is not None
        spans.append((r.started_at, r.finished_at))
    return max(sum(1 for s, f in spans if s <= start < f) for start, _ in spans)


async def test_max_running_is_respected_and_the_rest_wait_queued(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    rt = await runtime(providers={"fake": fakes.provider(GATED)}, max_running=2)
    jobs = [await rt.submit(spec(f"job {i}")) for i in range(5)]
    await wait_started(rt, jobs[0].id)
    await wait_started(rt, jobs[1].id)

    statuses = [current(rt, j.id).status for j in jobs]
    assert statuses == [JobStatus.RUNNING] * 2 + [JobStatus.QUEUED] * 3
    assert rt.summary()["running"] == 2 and rt.summary()["queued"] == 3
    assert len(fakes.log()) == 2

    fakes.open_gate()
    done = await finish_all(rt, jobs)

    assert [d.status for d in done] == [JobStatus.SUCCEEDED] * 5
    assert max_overlap(done) == 2


async def test_the_queue_is_first_in_first_out(runtime: RuntimeFactory, fakes: Fakes) -> None:
    rt = await runtime(providers={"fake": fakes.provider(QUICK)}, max_running=1)
    jobs = [await rt.submit(spec(f"job {i}")) for i in range(6)]

    done = await finish_all(rt, jobs)

    assert fakes.log() == [f"start job {i}" for i in range(6)]
    starts = [d.started_at for d in done if d.started_at is not None]
    assert len(starts) == 6 and starts == sorted(starts)
    assert max_overlap(done) == 1


async def test_a_provider_limit_holds_its_jobs_back_while_others_run(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    rt = await runtime(
        providers={
            "slow": fakes.provider(GATED, name="slow"),
            "other": fakes.provider(GATED, name="other"),
        },
        max_running=3,
        provider_limits={"slow": 1},
    )
    slow1 = await rt.submit(spec("slow 1", provider="slow"))
    slow2 = await rt.submit(spec("slow 2", provider="slow"))
    other1 = await rt.submit(spec("other 1", provider="other"))
    other2 = await rt.submit(spec("other 2", provider="other"))
    for job in (slow1, other1, other2):
        await wait_started(rt, job.id)

    # slow 2 waits behind the provider limit while later jobs of another provider run.
    assert current(rt, slow2.id).status is JobStatus.QUEUED
    assert rt.summary()["running"] == 3

    fakes.open_gate()
    s1, s2, _, _ = await finish_all(rt, [slow1, slow2, other1, other2])

    assert s1.status is s2.status is JobStatus.SUCCEEDED
    assert s1.finished_at is not None and s2.started_at is not None
    assert s2.started_at >= s1.finished_at


async def test_a_full_queue_refuses_at_once_as_saturated_and_stores_nothing(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    rt = await runtime(providers={"fake": fakes.provider(GATED)}, max_running=1, max_queued=2)
    running = await rt.submit(spec("a"))
    await wait_started(rt, running.id)
    queued = [await rt.submit(spec("b")), await rt.submit(spec("c"))]

    begun = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        await rt.submit(spec("d"))

    assert time.monotonic() - begun < 1.0
    assert caught.value.category is ErrorCategory.SATURATED
    assert "queue is full" in caught.value.message
    assert rt.list_jobs()[1] == 3

    # Cancelling a waiting job makes room again.
    await rt.cancel(queued[1].id)
    fourth = await rt.submit(spec("d"))
    fakes.open_gate()
    done = await finish_all(rt, [running, queued[0], fourth])
    assert [d.status for d in done] == [JobStatus.SUCCEEDED] * 3
    assert fakes.log() == ["start a", "start b", "start d"]


async def test_cancelling_a_queued_job_means_it_never_starts(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    rt = await runtime(providers={"fake": fakes.provider(GATED)}, max_running=1)
    first = await rt.submit(spec("first"))
    await wait_started(rt, first.id)
    second = await rt.submit(spec("second"))

    cancelled = await rt.cancel(second.id, reason="not needed any more")

    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.cancel_reason == "not needed any more"
    assert cancelled.started_at is None and cancelled.pid is None
    assert cancelled.finished_at is not None
    fakes.open_gate()
    assert (await rt.wait_finished(first.id, WAIT)).status is JobStatus.SUCCEEDED
    assert rt.summary()["queued"] == 0 and rt.summary()["running"] == 0
    assert fakes.log() == ["start first"]


async def test_a_held_job_waits_for_release_then_runs(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    rt = await runtime(providers={"fake": fakes.provider(QUICK)})
    held = await rt.submit(spec("needs approval", hold=True))

    assert held.status is JobStatus.AWAITING_APPROVAL
    assert held.queued_at is None
    still, _ = await rt.wait_for_events(held.id, held.last_seq, 0.2)  # nothing happens by itself
    assert still == [] and fakes.log() == []

    released = await rt.release(held.id)
    assert released.status is JobStatus.QUEUED and released.queued_at is not None
    done = await rt.wait_finished(held.id, WAIT)

    assert done.status is JobStatus.SUCCEEDED
    assert fakes.log() == ["start needs approval"]
    statuses = [e.data["status"] for e in rt.events(held.id) if e.type == "job.status"]
    assert statuses == ["awaiting_approval", "queued", "running", "succeeded"]
    assert (await rt.release(held.id)).status is JobStatus.SUCCEEDED  # a second release: no-op


async def test_cancelling_a_held_job_records_the_reason_and_release_cannot_revive_it(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    rt = await runtime(providers={"fake": fakes.provider(QUICK)})
    held = await rt.submit(spec(hold=True))

    denied = await rt.cancel(held.id, reason="approval_denied")

    assert denied.status is JobStatus.CANCELLED and denied.cancel_reason == "approval_denied"
    assert (await rt.release(held.id)).status is JobStatus.CANCELLED
    assert fakes.log() == []


async def test_releasing_into_a_full_queue_fails_the_job_as_saturated(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    rt = await runtime(providers={"fake": fakes.provider(GATED)}, max_running=1, max_queued=1)
    held = await rt.submit(spec("held", hold=True))  # holds do not take queue places
    running = await rt.submit(spec("running"))
    await wait_started(rt, running.id)
    await rt.submit(spec("queued"))

    released = await rt.release(held.id)

    assert released.status is JobStatus.FAILED
    assert released.error_category is ErrorCategory.SATURATED
    fakes.open_gate()


async def test_an_idempotency_key_returns_the_existing_job_per_caller(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    # a grant caller: its jobs run inside the isolation boundary
    rt = await runtime(providers={"fake": fakes.provider(QUICK)}, isolation="bwrap")
    first = await rt.submit(spec("do it once", idempotency_key="k-1"))
    again = await rt.submit(spec("do it once", idempotency_key="k-1"))
    args = {"prompt": "do it once", "idempotency_key": "k-1"}
    in_args = await rt.submit(JobSpec("fake", "codex_request_async", "exec", args))
    other_caller = await rt.submit(spec("do it once", idempotency_key="k-1", caller="grant:bot"))

    assert again.id == first.id
    assert in_args.id == first.id
    assert other_caller.id != first.id
    await finish_all(rt, [first, other_caller])
    after_finish = await rt.submit(spec("do it once", idempotency_key="k-1"))
    assert after_finish.id == first.id and after_finish.status is JobStatus.SUCCEEDED
    assert rt.list_jobs()[1] == 2
    assert fakes.log() == ["start do it once"] * 2


async def test_identical_prompts_without_a_key_are_separate_jobs(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    rt = await runtime(providers={"fake": fakes.provider(QUICK)})
    one = await rt.submit(spec("same prompt"))
    two = await rt.submit(spec("same prompt"))

    assert one.id != two.id
    done = await finish_all(rt, [one, two])
    assert [d.status for d in done] == [JobStatus.SUCCEEDED] * 2
    assert fakes.log() == ["start same prompt"] * 2


async def test_submit_rejects_unknown_providers_kinds_and_arguments_naming_the_field(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    rt = await runtime(providers={"fake": fakes.provider(QUICK)})
    bad_kind = spec()
    bad_kind.kind = "shell"
    cases = [(spec(provider="nope"), "provider"), (bad_kind, "kind"), (spec(color="red"), "color")]
    for bad, field in cases:
        with pytest.raises(InvalidInputError) as caught:
            await rt.submit(bad)
        assert caught.value.field == field
    assert rt.list_jobs()[1] == 0
    with pytest.raises(NotFoundError):
        await rt.cancel("no-such-job")
    with pytest.raises(InvalidInputError):
        rt.list_jobs(status="bogus")


async def test_waits_are_woken_by_the_runtime_and_honour_their_timeouts(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    rt = await runtime(providers={"fake": fakes.provider(GATED)})
    job = await rt.submit(spec())
    running = await wait_started(rt, job.id)

    # Nothing new happens while the gate is closed: both waits come back empty-handed in time.
    begun = time.monotonic()
    events, record = await rt.wait_for_events(job.id, running.last_seq, 0.3)
    assert events == [] and record.status is JobStatus.RUNNING
    assert (await rt.wait_finished(job.id, 0.3)).status is JobStatus.RUNNING
    assert 0.6 <= time.monotonic() - begun < 5

    waiter = asyncio.ensure_future(rt.wait_finished(job.id, WAIT))
    fakes.open_gate()
    done = await asyncio.wait_for(waiter, WAIT)
    assert done.status is JobStatus.SUCCEEDED
    events, record = await rt.wait_for_events(job.id, running.last_seq, WAIT)
    assert [e.type for e in events] == ["item.completed", "turn.completed", "job.status"]
    assert record.is_terminal


async def test_subscribers_see_every_change_of_a_job_in_order(
    runtime: RuntimeFactory, echo_provider: Provider
) -> None:
    rt = await runtime(providers={"fake": echo_provider})
    feed = rt.subscribe()
    job = await rt.submit(spec())
    await rt.wait_finished(job.id, WAIT)

    changes: list[JobChange] = []
    while (change := await feed.get(timeout=0.1)) is not None:
        changes.append(change)
    feed.close()

    assert all(c.job_id == job.id for c in changes)
    seqs = [c.last_seq for c in changes]
    assert seqs == sorted(seqs) and seqs[-1] == current(rt, job.id).last_seq
    statuses = [c.status for c in changes]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded" and "running" in statuses


async def test_a_subscriber_that_falls_behind_is_told_to_resync_then_follows_again(
    runtime: RuntimeFactory, echo_provider: Provider
) -> None:
    rt = await runtime(providers={"fake": echo_provider})
    feed = rt.subscribe(maxsize=3)
    held = [await rt.submit(spec(f"held {i}", hold=True)) for i in range(5)]  # 5 changes, room 3

    unread: list[JobChange] = []
    while (change := await feed.get(timeout=0)) is not None:
        unread.append(change)
    assert unread[0] is RESYNC and unread[0].is_resync  # what was lost is not replayed...
    assert [c.job_id for c in unread[1:]] == [held[3].id, held[4].id]  # ...newer changes follow
    assert not any(c.is_resync for c in unread[1:])
    jobs, total = rt.list_jobs(status="awaiting_approval")  # the reload a resync asks for
    assert total == 5 and {j.id for j in jobs} == {j.id for j in held}

    await rt.cancel(held[0].id)
    change = await feed.get(timeout=WAIT)
    assert change is not None and not change.is_resync
    assert (change.job_id, change.status) == (held[0].id, "cancelled")
    feed.close()

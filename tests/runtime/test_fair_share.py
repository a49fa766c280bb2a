"""Fair share and the job's world: a grant cannot starve the owner, a job's directory cannot be
swapped under it, and a job's environment is an allow list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runtime_helpers import Fakes, RuntimeFactory, spec, wait_started

from llmgw_jupyter.errors import ErrorCategory, GatewayError
from llmgw_jupyter.runtime import JobStatus

GATED = """
start()
wait_for_gate()
answer("done: " + PROMPT)
complete()
"""
OWNER_ONLY_ENV = frozenset(
    {
        "JUPYTERHUB_API_TOKEN",
        "JPY_API_TOKEN",
        "LLMGW_SERVER_TOKEN",
        "JUPYTER_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "GITHUB_TOKEN",
        "SOME_OWNER_SETTING",
    }
)
ENV_REPORT = """
start()
answer(json.dumps(sorted(os.environ)))
complete()
"""


async def test_a_grant_holds_at_most_its_share_of_unfinished_jobs(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    rt = await runtime(
        providers={"fake": fakes.provider(GATED)}, isolation="bwrap", max_active_per_grant=2
    )
    for n in range(2):
        await rt.submit(spec(f"held {n}", caller="grant:greedy", hold=True))
    with pytest.raises(GatewayError) as refused:
        await rt.submit(spec("one more", caller="grant:greedy"))
    assert refused.value.category is ErrorCategory.LIMIT_EXCEEDED
    assert "max_active_jobs_per_grant" in refused.value.message
    other = await rt.submit(spec("another grant", caller="grant:modest", hold=True))
    owner = await rt.submit(spec("the owner", hold=True))
    assert other.status is owner.status is JobStatus.AWAITING_APPROVAL


async def test_grants_cannot_fill_the_owners_part_of_the_queue(
    runtime: RuntimeFactory, fakes: Fakes
) -> None:
    rt = await runtime(
        providers={"fake": fakes.provider(GATED)},
        isolation="bwrap",
        isolate_owner=False,
        max_running=1,
        max_queued=4,
        owner_reserved_queue=2,
    )
    running = await rt.submit(spec("keeps the only slot"))
    await wait_started(rt, running.id)
    for n in range(2):
        await rt.submit(spec(f"queued {n}", caller=f"grant:g{n}"))
    with pytest.raises(GatewayError) as refused:
        await rt.submit(spec("too many", caller="grant:g9"))
    assert refused.value.category is ErrorCategory.SATURATED
    assert "max_queued" in refused.value.message
    for n in range(2):
        queued = await rt.submit(spec(f"owner {n}"))
        assert queued.status is JobStatus.QUEUED
    fakes.open_gate()


async def test_a_working_dir_swapped_for_a_symlink_while_queued_is_not_used(
    runtime: RuntimeFactory, fakes: Fakes, tmp_path: Path
) -> None:
    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir()
    elsewhere.mkdir()
    rt = await runtime(providers={"fake": fakes.provider(GATED)}, max_running=1)
    first = await rt.submit(spec("first"))
    await wait_started(rt, first.id)
    waiting = await rt.submit(spec("second", working_dir=str(allowed)))
    allowed.rmdir()
    allowed.symlink_to(elsewhere)  # what a policy checked ('within') is no longer what it names
    fakes.open_gate()

    done = await rt.wait_finished(waiting.id, 30)

    assert done.status is JobStatus.FAILED
    assert done.error_category is ErrorCategory.INVALID_INPUT
    assert "changed since the job was submitted" in (done.error_message or "")
    assert done.started_at is None  # never ran


async def test_a_jobs_environment_is_an_allow_list(
    runtime: RuntimeFactory, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in OWNER_ONLY_ENV:
        monkeypatch.setenv(name, "owner-only")
    monkeypatch.setenv("PASSED_ON_PURPOSE", "yes")
    rt = await runtime(
        providers={"fake": fakes.provider(ENV_REPORT)}, env_passthrough=["PASSED_ON_PURPOSE"]
    )
    job = await rt.submit(spec("env"))
    done = await rt.wait_finished(job.id, 30)
    names = set(json.loads(done.final_message or "[]"))
    assert "PATH" in names and "PASSED_ON_PURPOSE" in names
    assert not names & OWNER_ONLY_ENV

"""Read answers kept while the store is unchanged: reused, dropped on any change, never shared
between callers, bounded."""

from __future__ import annotations

import sqlite3

import pytest
from pydantic import BaseModel

from llmgw_jupyter.contract import output_json
from llmgw_jupyter.errors import NotFoundError
from llmgw_jupyter.tools import Caller
from llmgw_jupyter.tools.read_cache import ReadCache
from tools.gateway_harness import Harness


class Answer(BaseModel):
    text: str


class Stamp:
    def __init__(self) -> None:
        self.value = 0

    def __call__(self) -> int:
        return self.value


def counting(text: str) -> tuple[list[int], object]:
    made: list[int] = []

    def make() -> Answer:
        made.append(1)
        return Answer(text=text)

    return made, make


def test_an_answer_is_made_once_while_the_stamp_holds_and_again_after_it_moves() -> None:
    stamp = Stamp()
    cache = ReadCache(stamp)
    made, make = counting("a")
    first = cache.answer("k", make)  # type: ignore[arg-type]
    again = cache.answer("k", make)  # type: ignore[arg-type]
    assert made == [1] and again is first
    assert first.json == output_json(first.output) == '{"text":"a"}'
    stamp.value += 1
    cache.answer("k", make)  # type: ignore[arg-type]
    assert made == [1, 1]


def test_a_failed_answer_is_not_kept_and_big_answers_are_answered_but_not_kept() -> None:
    cache = ReadCache(Stamp(), max_answer_chars=20)

    def missing() -> Answer:
        raise NotFoundError("job j-1")

    with pytest.raises(NotFoundError):
        cache.answer("gone", missing)
    assert len(cache) == 0
    made, make = counting("x" * 50)
    assert cache.answer("big", make).output == Answer(text="x" * 50)  # type: ignore[arg-type]
    cache.answer("big", make)  # type: ignore[arg-type]
    assert made == [1, 1] and len(cache) == 0


def test_the_cache_keeps_at_most_its_entries_dropping_the_least_recently_used() -> None:
    cache = ReadCache(Stamp(), max_entries=2)
    for key in ("a", "b"):
        cache.answer(key, lambda key=key: Answer(text=key))  # type: ignore[misc]
    cache.answer("a", lambda: Answer(text="never made"))  # a hit: "a" is now the newest
    cache.answer("c", lambda: Answer(text="c"))  # evicts "b"
    assert len(cache) == 2
    assert cache.answer("a", lambda: Answer(text="remade")).output.text == "a"  # type: ignore[attr-defined]
    assert cache.answer("b", lambda: Answer(text="remade")).output.text == "remade"  # type: ignore[attr-defined]


async def test_a_status_answer_follows_every_change_to_the_job(fake_gateway: Harness) -> None:
    """Changes through this process's store, and commits by another connection (another
    process, such as the ``llmgw`` command), are seen by the very next call."""
    job_id = (await fake_gateway.ok("codex_request_async", {"prompt": "quick"}))["job"]["id"]
    await fake_gateway.finished(job_id)
    status = await fake_gateway.ok("llm_job_status", {"job_id": job_id})
    assert await fake_gateway.ok("llm_job_status", {"job_id": job_id}) == status

    fake_gateway.runtime.store.update_job(job_id, final_message="changed here")
    here = await fake_gateway.ok("llm_job_status", {"job_id": job_id})
    assert here["job"]["final_message"] == "changed here"

    database = fake_gateway.runtime.database.path
    assert database is not None
    other = sqlite3.connect(database)
    try:
        with other:
            other.execute(
                "UPDATE jobs SET final_message = 'changed elsewhere' WHERE id = ?", (job_id,)
            )
    finally:
        other.close()
    elsewhere = await fake_gateway.ok("llm_job_status", {"job_id": job_id})
    assert elsewhere["job"]["final_message"] == "changed elsewhere"
    assert elsewhere["events"] == status["events"]


async def test_a_grant_never_gets_an_answer_kept_for_the_owner(fake_gateway: Harness) -> None:
    job_id = (await fake_gateway.ok("codex_request_async", {"prompt": "the owner's"}))["job"]["id"]
    await fake_gateway.finished(job_id)
    await fake_gateway.ok("llm_job_status", {"job_id": job_id})
    agent = fake_gateway.grant("agent", {"version": "1", "default": "allow"})
    assert fake_gateway.gateway.policy_for(agent) is not None
    refused = await fake_gateway.call("llm_job_status", {"job_id": job_id}, agent)
    assert refused.error == "not_found", refused.text
    again = await fake_gateway.call("llm_job_status", {"job_id": job_id}, Caller.owner())
    assert not again.is_error


async def test_a_limited_grants_polls_are_answered_from_the_kept_answer(
    fake_gateway: Harness,
) -> None:
    """Each call of a grant with a durable limit writes a rate-limit hit: that moves nothing the
    status answer is made of, so the kept answer stays valid (and the limit still counts)."""
    limited = {
        "version": "1",
        "default": "allow",
        "tools": {
            "llm_job_status": {"limits": [{"counter": "polls", "window": "minute", "max": 5}]}
        },
    }
    agent = fake_gateway.grant("poller", limited)
    submitted = await fake_gateway.ok("codex_request_async", {"prompt": "poll me"}, agent)
    job_id = submitted["job"]["id"]
    await fake_gateway.finished(job_id)
    stamp = fake_gateway.runtime.jobs_stamp
    first = await fake_gateway.ok("llm_job_status", {"job_id": job_id}, agent)
    before = stamp()
    for _ in range(4):
        assert await fake_gateway.ok("llm_job_status", {"job_id": job_id}, agent) == first
    assert stamp() == before
    refused = await fake_gateway.call("llm_job_status", {"job_id": job_id}, agent)
    assert refused.error == "rate_limited", refused.text

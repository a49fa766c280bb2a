"""A started Runtime + Gateway for tests, a fake Codex for the cases the real one cannot show on
demand (a job that hangs forever, many instant jobs), and waits woken by events.

The main flows run the real Codex CLI against the mock Responses server; the fake stands in only
where noted in the tests that use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmgw_jupyter.gateway import Gateway, ToolResult
from llmgw_jupyter.policy import PolicySource
from llmgw_jupyter.providers.base import ProviderSettings
from llmgw_jupyter.providers.registry import build_providers
from llmgw_jupyter.runtime import JobRecord, Runtime, RuntimeConfig
from llmgw_jupyter.testing.fake_provider import FakeCodexProvider
from llmgw_jupyter.tools import Caller

WAIT = 60.0  # generous deadline for things that should happen "soon" on a loaded 2-core machine
OWNER = Caller.owner()


@dataclass
class Harness:
    """What a test needs: the gateway, its runtime, a working dir and a few shortcuts."""

    gateway: Gateway
    runtime: Runtime
    workdir: Path
    tmp: Path
    grants: dict[str, str] = field(default_factory=dict)  # name -> token

    def grant(self, name: str, policy: dict[str, Any] | None) -> Caller:
        """Create a grant and return the caller its token opens."""
        _, token = self.gateway.create_grant(name, policy)
        self.grants[name] = token
        caller = self.gateway.caller_for_token(token)
        assert caller == Caller.grant(name)
        return caller

    async def call(
        self, tool: str, arguments: dict[str, Any], caller: Caller = OWNER, **kwargs: Any
    ) -> ToolResult:
        return await self.gateway.call(tool, arguments, caller, **kwargs)

    async def ok(self, tool: str, arguments: dict[str, Any], caller: Caller = OWNER) -> Any:
        """Call and insist on success; returns the structured content."""
        result = await self.call(tool, arguments, caller)
        assert not result.is_error, result.text
        assert result.structured is not None
        return result.structured

    async def finished(self, job_id: str, timeout: float = WAIT) -> JobRecord:
        record = await self.runtime.wait_finished(job_id, timeout)
        assert record.is_terminal, f"job {job_id} still {record.status.value} after {timeout} s"
        return record

    async def run(self, prompt: str, caller: Caller = OWNER, **arguments: Any) -> dict[str, Any]:
        """A finished, successful codex_request; returns its structured content."""
        arguments.setdefault("working_dir", str(self.workdir))
        out: dict[str, Any] = await self.ok(
            "codex_request", {"prompt": prompt, "wait_seconds": WAIT, **arguments}, caller
        )
        assert out["done"] is True, out["message"]
        assert out["job"]["status"] == "succeeded", out["job"]
        return out


@contextlib.asynccontextmanager
async def open_gateway(
    tmp: Path,
    *,
    codex_path: str | None = None,
    codex_home: Path | None = None,
    fake: bool = False,
    owner_policy: PolicySource | None = None,
    grant_policy_dir: Path | None = None,
    gateway_options: dict[str, Any] | None = None,
    **config: Any,
) -> AsyncIterator[Harness]:
    """A Runtime on ``tmp/data`` (real Codex, or the fake when ``fake``) and a started Gateway
    (``gateway_options``: more ``Gateway`` arguments, e.g. a clock)."""
    workdir = tmp / f"work-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    if fake:
        # Every installed provider keeps its tools and validation; Codex runs the test CLI.
        config["providers"] = {**build_providers(), "codex": FakeCodexProvider()}
    # Gateway tests submit many quick jobs per grant; the per-grant fair-share cap has its own
    # tests (tests/runtime), so it is out of the way here unless a test sets it.
    config.setdefault("max_active_per_grant", 1000)
    codex = ProviderSettings(codex_path, str(codex_home) if codex_home is not None else None)
    runtime = Runtime(
        RuntimeConfig(data_dir=tmp / "data", provider_settings={"codex": codex}, **config)
    )
    await runtime.start()
    gateway = Gateway(
        runtime,
        owner_policy=owner_policy,
        grant_policy_dir=grant_policy_dir,
        **(gateway_options or {}),
    )
    try:
        await gateway.start()
        yield Harness(gateway, runtime, workdir, tmp)
    finally:
        await gateway.close()
        await runtime.close(cancel_running=True)


async def eventually(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Wait for a condition that has no event to await (another task's progress), by deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


async def pending_approval(gateway: Gateway, tool: str) -> Any:
    """The pending approval a caller's call just opened (the caller runs in another task)."""
    return await eventually(
        lambda: next((a for a in gateway.approvals() if a.tool == tool), None),
        f"a pending approval of {tool}",
    )


ProgressLog = list[tuple[float, float | None, str | None]]


def progress_recorder() -> tuple[ProgressLog, Callable[..., Awaitable[None]]]:
    seen: ProgressLog = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total, message))

    return seen, progress


# One valid call per tool, for tests that walk every tool.
MINIMAL_ARGUMENTS: dict[str, dict[str, Any]] = {
    "codex_request": {"prompt": "hi"},
    "codex_request_async": {"prompt": "hi"},
    "codex_fork_session": {"prompt": "hi", "last": True},
    "claude_request": {"prompt": "hi"},
    "claude_request_async": {"prompt": "hi"},
    "claude_fork_session": {"prompt": "hi", "last": True},
    "llm_job_status": {"job_id": "abc"},
    "llm_job_watch": {"job_id": "abc"},
    "llm_job_result": {"job_id": "abc"},
    "llm_job_cancel": {"job_id": "abc"},
    "llm_job_list": {},
    "llm_session_list": {},
}

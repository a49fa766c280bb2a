"""Clients nobody here wrote, against a real ``jupyter server`` with llmgw: the official TypeScript
SDK (node, ``tests/clients``), ``fastmcp`` and the official Python SDK.

Each client gets its own server (own owner policy file, own rate-limit counters) and runs the
same scenario: list tools, call each tool, read a policy denial, a rate-limit refusal, an invalid
argument and an unknown job as readable errors, see progress during ``codex_request``, cancel a
call, get ``-32602`` for an unknown tool and ``notifications/tools/list_changed`` after the
policy file is edited. Every result, success or error, is checked against the tool's declared
``outputSchema`` with ``jsonschema``: structured content must match it (errors carry none).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx2
import jsonschema
import mcp_types as types
import pytest
from fastmcp import Client as FastMCPClient
from fastmcp.client.messages import MessageHandler
from fastmcp.client.transports import StreamableHttpTransport
from fastmcp.exceptions import ToolError
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import listen
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ToolsListChanged
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from llmgw_jupyter.testing.codex_home import write_codex_home
from llmgw_jupyter.testing.jupyter_process import JupyterProcess, start_jupyter
from llmgw_jupyter.testing.mock_responses import MockResponsesServer
from llmgw_jupyter.tools import TOOL_NAMES
from llmgw_jupyter.tools.registry import REGISTRY

WAIT = 60.0
CLIENTS_DIR = Path(__file__).resolve().parents[1] / "clients"
POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "tools": {
        "llm_session_list": {"action": "deny", "reason": "sessions are private on this server"},
        "llm_job_list": {"limits": [{"counter": "listing", "window": "minute", "max": 1}]},
    },
}
EDITED_POLICY: dict[str, Any] = {**POLICY, "hide": ["llm_job_cancel"]}
LISTED = set(TOOL_NAMES) - {"llm_session_list"}  # a tool that is never allowed is not listed


@dataclass
class Answer:
    """One ``tools/call`` as the client gave it back, in wire form (camelCase keys)."""

    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None  # a JSON-RPC error: code, message
    progress: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        assert self.result is not None, self.error
        return "\n".join(c.get("text", "") for c in self.result["content"])

    @property
    def structured(self) -> dict[str, Any]:
        assert self.result is not None and not self.result.get("isError"), self.result
        return dict(self.result["structuredContent"])


class Agent(Protocol):
    """The same scenario through each client."""

    name: str

    async def list_tools(self) -> list[dict[str, Any]]: ...
    async def call(
        self, tool: str, arguments: dict[str, Any], progress: bool = False
    ) -> Answer: ...
    async def cancel_at_first_progress(self, tool: str, arguments: dict[str, Any]) -> None: ...
    async def wait_list_changed(self, seen: int) -> int: ...


# -- the official TypeScript SDK ---------------------------------------------------------------
def node_client_installed() -> Path:
    """``tests/clients`` with its pinned packages (``npm ci`` if scripts/test.sh has not)."""
    if not (CLIENTS_DIR / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm not found: Node 20+ is needed for the TypeScript client", False)
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(CLIENTS_DIR)],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return CLIENTS_DIR / "ts_client.mjs"


class TypeScriptAgent:
    name = "typescript"

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.capabilities: dict[str, Any] = {}

    @classmethod
    async def start(cls, url: str, token: str) -> TypeScriptAgent:
        node = shutil.which("node")
        assert node is not None, "node not found"
        process = await asyncio.create_subprocess_exec(
            node,
            str(node_client_installed()),
            url,
            token,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=CLIENTS_DIR,
            # One JSON line per answer: tools/list of every provider's tools exceeds asyncio's
            # 64 KiB default line limit.
            limit=16 * 1024 * 1024,
        )
        agent = cls(process)
        ready = await agent._read()
        assert ready.get("ready") is True, ready
        agent.capabilities = ready["capabilities"]
        return agent

    async def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), WAIT)
        assert line, "the node client exited"
        return dict(json.loads(line))

    async def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
        await self.process.stdin.drain()
        answer = await self._read()
        assert "failure" not in answer, answer
        return answer

    async def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    async def list_tools(self) -> list[dict[str, Any]]:
        return list((await self.ask("list_tools"))["tools"])

    async def call(self, tool: str, arguments: dict[str, Any], progress: bool = False) -> Answer:
        got = await self.ask("call", tool=tool, arguments=arguments, progress=progress)
        messages = [str(p.get("message", "")) for p in got.get("progress", [])]
        return Answer(got.get("result"), got.get("error"), messages)

    async def cancel_at_first_progress(self, tool: str, arguments: dict[str, Any]) -> None:
        got = await self.ask("cancel", tool=tool, arguments=arguments)
        assert got["aborted"] and "the test cancels" in got["aborted"], got  # rejected locally
        # The cancelled request's stream ended without an answer: no -32800 (or any) response.
        assert got["contentType"].startswith("text/event-stream")
        assert '"id"' not in got["stream"] and "-32800" not in got["stream"], got["stream"]
        assert got["stream"].startswith("id: ") and "\ndata: \n\n" in got["stream"]  # primed

    async def wait_list_changed(self, seen: int) -> int:
        return int((await self.ask("wait_list_changed", seen=seen))["count"])


# -- fastmcp ------------------------------------------------------------------------------------
class _ListChanges(MessageHandler):
    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Condition()

    async def on_tool_list_changed(self, message: types.ToolListChangedNotification) -> None:
        async with self.changed:
            self.count += 1
            self.changed.notify_all()

    async def wait(self, seen: int) -> int:
        async with self.changed:
            await self.changed.wait_for(lambda: self.count > seen)
            return self.count


class FastMCPAgent:
    name = "fastmcp"

    def __init__(self, client: FastMCPClient[Any], changes: _ListChanges) -> None:
        self.client = client
        self.changes = changes

    async def list_tools(self) -> list[dict[str, Any]]:
        return [_wire(tool) for tool in await self.client.list_tools()]

    async def call(self, tool: str, arguments: dict[str, Any], progress: bool = False) -> Answer:
        seen: list[str] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            seen.append(message or "")

        try:
            result = await self.client.call_tool(
                tool,
                arguments,
                raise_on_error=False,
                progress_handler=on_progress if progress else None,
            )
        except (MCPError, ToolError) as error:
            return Answer(error=_error(error), progress=seen)
        wire: dict[str, Any] = {
            "content": [_wire(block) for block in result.content],
            "isError": result.is_error,
        }
        if result.structured_content is not None:
            wire["structuredContent"] = result.structured_content
        if result.meta is not None:
            wire["_meta"] = result.meta
        return Answer(wire, progress=seen)

    async def cancel_at_first_progress(self, tool: str, arguments: dict[str, Any]) -> None:
        await _cancel_at_first_progress(
            lambda on_progress: self.client.call_tool(tool, arguments, progress_handler=on_progress)
        )

    async def wait_list_changed(self, seen: int) -> int:
        return await self.changes.wait(seen)


async def _pump(events: AsyncIterator[Any], changes: _ListChanges) -> None:
    async for event in events:
        if isinstance(event, ToolsListChanged):
            await changes.on_tool_list_changed(types.ToolListChangedNotification())


# -- the official Python SDK --------------------------------------------------------------------
class PythonAgent:
    name = "python"

    def __init__(self, session: ClientSession, changes: _ListChanges) -> None:
        self.session = session
        self.changes = changes

    async def list_tools(self) -> list[dict[str, Any]]:
        return [_wire(tool) for tool in (await self.session.list_tools()).tools]

    async def call(self, tool: str, arguments: dict[str, Any], progress: bool = False) -> Answer:
        seen: list[str] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            seen.append(message or "")

        try:
            result = await self.session.call_tool(
                tool, arguments, progress_callback=on_progress if progress else None
            )
        except MCPError as error:
            return Answer(error=_error(error), progress=seen)
        return Answer(_wire(result), progress=seen)

    async def cancel_at_first_progress(self, tool: str, arguments: dict[str, Any]) -> None:
        await _cancel_at_first_progress(
            lambda on_progress: self.session.call_tool(
                tool, arguments, progress_callback=on_progress
            )
        )

    async def wait_list_changed(self, seen: int) -> int:
        return await self.changes.wait(seen)


async def _cancel_at_first_progress(start: Callable[[Any], Awaitable[Any]]) -> None:
    """Start a call with a progress handler, cancel it at its first progress notification and
    check the client ends it as cancelled (each Python client names the handler differently)."""
    first = asyncio.Event()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        first.set()

    call = asyncio.ensure_future(start(on_progress))
    await asyncio.wait_for(first.wait(), WAIT)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


def _wire(model: Any) -> dict[str, Any]:
    return dict(model.model_dump(by_alias=True, mode="json", exclude_none=True))


def _error(error: Exception) -> dict[str, Any]:
    if isinstance(error, MCPError):
        return {"code": error.code, "message": error.message, "data": error.data}
    return {"code": None, "message": str(error)}


# -- servers and clients ------------------------------------------------------------------------
@dataclass
class Setup:
    server: JupyterProcess
    policy_file: Path


@pytest.fixture(scope="module")
def model() -> Iterator[MockResponsesServer]:
    with MockResponsesServer() as server:
        yield server


@pytest.fixture(params=["typescript", "fastmcp", "python"])
def setup(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    model: MockResponsesServer,
    codex_path: str,
) -> Iterator[Setup]:
    """A server of its own per client: its policy file, counters and sessions are its own."""
    policy_file = tmp_path / "owner-policy.json"
    policy_file.write_text(json.dumps(POLICY))
    home = write_codex_home(tmp_path / "codex-home", model.base_url)
    server = start_jupyter(
        tmp_path,
        data_dir=tmp_path / "llmgw-data",
        codex_path=codex_path,
        codex_home=home,
        args=[f"--LLMGatewayApp.owner_policy={policy_file}"],
    )
    yield Setup(server, policy_file)
    server.stop()


@asynccontextmanager
async def connected(kind: str, url: str, token: str) -> AsyncIterator[Agent]:
    """An initialized client of ``kind`` (entered and left in the test's own task: the SDKs'
    task groups must be)."""
    async with AsyncExitStack() as stack:
        if kind == "typescript":
            ts = await TypeScriptAgent.start(url, token)
            stack.push_async_callback(ts.close)
            yield ts
            errors = (await ts.ask("errors"))["errors"]
            # Nothing the client could not place: no answer to a cancelled request, no schema
            # mismatch, no stream it failed to resume.
            assert errors == [], errors
            return
        changes = _ListChanges()
        if kind == "fastmcp":
            transport = StreamableHttpTransport(url, headers={"Authorization": f"Bearer {token}"})
            client: FastMCPClient[Any] = FastMCPClient(transport, message_handler=changes)
            await stack.enter_async_context(client)
            # fastmcp negotiates the 2026-07-28 revision (no sessions, no GET stream): list
            # changes come on a subscriptions/listen stream the client opens, as that revision
            # asks, with the official SDK's ``listen`` on fastmcp's session.
            assert client.session.protocol_version in MODERN_PROTOCOL_VERSIONS
            events = await stack.enter_async_context(
                listen(client.session, tools_list_changed=True)
            )
            assert events.honored.tools_list_changed is True
            pump = asyncio.create_task(_pump(events, changes))
            stack.callback(pump.cancel)
            yield FastMCPAgent(client, changes)
            return

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                await changes.on_tool_list_changed(message)

        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=WAIT)
        )
        read, write = await stack.enter_async_context(streamable_http_client(url, http_client=http))
        session = await stack.enter_async_context(
            ClientSession(read, write, message_handler=on_message)
        )
        await session.initialize()
        yield PythonAgent(session, changes)


# -- the scenario -------------------------------------------------------------------------------
def conforms(tool: str, answer: Answer) -> None:
    """The spec's rule: with an outputSchema, a result's structured content must match it, and a
    success must have some. Errors carry none (the error object is in ``_meta``)."""
    assert answer.result is not None, (tool, answer.error)
    schema = REGISTRY[tool].output_schema
    assert schema is not None
    if answer.result.get("isError"):
        assert "structuredContent" not in answer.result, answer.result
        error = answer.result["_meta"]["llmgw/error"]
        assert error["category"] in answer.text and error["message"] in answer.text
        return
    jsonschema.validate(answer.result["structuredContent"], schema)


async def until_done(agent: Agent, job_id: str) -> dict[str, Any]:
    after = 0
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        watched = await agent.call(
            "llm_job_watch", {"job_id": job_id, "after_seq": after, "timeout_seconds": 10}
        )
        conforms("llm_job_watch", watched)
        after = watched.structured["next_after_seq"]
        if watched.structured["done"]:
            return dict(watched.structured["job"])
    raise AssertionError(f"job {job_id} did not end")


async def test_a_third_party_client_reads_every_answer(
    setup: Setup, request: pytest.FixtureRequest
) -> None:
    kind = request.node.callspec.params["setup"]
    async with connected(kind, setup.server.mcp_url, setup.server.token) as agent:
        await scenario(agent, setup)


async def scenario(agent: Agent, setup: Setup) -> None:
    tools = {tool["name"]: tool for tool in await agent.list_tools()}
    assert set(tools) == LISTED
    for name, tool in tools.items():
        assert tool["outputSchema"] == REGISTRY[name].output_schema

    # Every tool, successfully (codex_request with progress while the job runs).
    submitted = await agent.call("codex_request_async", {"prompt": "first"})
    conforms("codex_request_async", submitted)
    first = submitted.structured["job"]["id"]
    waited = await agent.call(
        "codex_request",
        {"prompt": "[mock:steps=3,step_delay=0.3] second", "wait_seconds": 60},
        progress=True,
    )
    conforms("codex_request", waited)
    assert waited.structured["done"] is True, waited.structured
    assert waited.structured["final_message"] == "echo: [mock:steps=3,step_delay=0.3] second"
    assert waited.progress, "no progress notification during codex_request"
    assert (await until_done(agent, first))["status"] == "succeeded"
    for tool, arguments in [
        ("llm_job_status", {"job_id": first}),
        ("llm_job_result", {"job_id": first}),
        ("llm_job_list", {}),
    ]:
        conforms(tool, await agent.call(tool, arguments))
    forked = await agent.call(
        "codex_fork_session",
        {"session_id": waited.structured["session_id"], "prompt": "[mock:delay=30] fork"},
    )
    conforms("codex_fork_session", forked)
    stopped = await agent.call("llm_job_cancel", {"job_id": forked.structured["job"]["id"]})
    conforms("llm_job_cancel", stopped)

    # Refusals and failures are results whose text says what happened and what to do (before
    # issue 10 the TypeScript SDK turned each into -32602 "Structured content does not match").
    missing = await agent.call("llm_job_status", {"job_id": "nosuchjob"})
    conforms("llm_job_status", missing)
    assert missing.text.startswith("not_found: ") and "nosuchjob" in missing.text
    denied = await agent.call("llm_session_list", {})
    conforms("llm_session_list", denied)
    assert denied.text.startswith("[POLICY DENIED] sessions are private on this server")
    limited = await agent.call("llm_job_list", {})
    conforms("llm_job_list", limited)
    assert limited.text.startswith("[POLICY DENIED] rate limit exceeded")
    assert "retry_after_seconds: " in limited.text and "category: rate_limited" in limited.text
    assert limited.result is not None
    assert 0 < limited.result["_meta"]["llmgw/error"]["retry_after_seconds"] <= 60
    invalid = await agent.call("llm_job_watch", {"job_id": first, "timeout_seconds": -5})
    conforms("llm_job_watch", invalid)
    assert invalid.text.startswith("invalid_input: ") and "field: timeout_seconds" in invalid.text

    # An unknown tool is a protocol error.
    unknown = await agent.call("llm_no_such_tool", {})
    assert unknown.result is None and unknown.error is not None
    assert unknown.error["code"] in (types.INVALID_PARAMS, None), unknown.error
    assert "llm_no_such_tool" in unknown.error["message"]

    # Cancelling a call that streams progress: no answer comes for it, the session goes on.
    await agent.cancel_at_first_progress(
        "codex_request", {"prompt": "[mock:steps=4,step_delay=0.5] cancel me", "wait_seconds": 60}
    )
    conforms("llm_job_status", await agent.call("llm_job_status", {"job_id": first}))

    # Editing the owner's policy file hides a tool: the open session hears of it.
    if isinstance(agent, TypeScriptAgent):
        assert agent.capabilities["tools"] == {"listChanged": True}
    setup.policy_file.write_text(json.dumps(EDITED_POLICY))
    assert await asyncio.wait_for(agent.wait_list_changed(0), WAIT) >= 1
    assert {tool["name"] for tool in await agent.list_tools()} == LISTED - {"llm_job_cancel"}

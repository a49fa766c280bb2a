"""Issue 9's attacks, replayed by a grant over MCP against a real ``jupyter server`` running the
real Codex CLI: the grant holds the narrowest useful policy (default deny; Codex requests in one
directory, never danger-full-access) and a model that obeys the prompt runs whatever command the
attacker asks for (the mock's ``[mock-shell]`` directive). What the grant gets back must hold
nothing of the owner's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmgw_jupyter.testing.codex_home import write_codex_home
from llmgw_jupyter.testing.jupyter_process import JupyterProcess, start_jupyter
from llmgw_jupyter.testing.mcp_agent import agent_session
from llmgw_jupyter.testing.mock_responses import MockResponsesServer

WAIT = 90.0
OWNER_KEY = "sk-owner-key-0c0ffee"
HUB_TOKEN = "hub-api-token-b0b"


@pytest.fixture(scope="module")
def model() -> Iterator[MockResponsesServer]:
    with MockResponsesServer() as server:
        yield server


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, model: MockResponsesServer, codex_path: str
) -> Iterator[tuple[JupyterProcess, Path, Path]]:
    workdir = tmp_path_factory.mktemp("owner")
    home = write_codex_home(workdir / "codex-home", model.base_url)
    (home / "auth.json").write_text(json.dumps({"OPENAI_API_KEY": OWNER_KEY}))
    allowed = workdir / "root" / "agent-work"  # inside the server's root dir, as a user would
    allowed.mkdir(parents=True)
    jupyter = start_jupyter(
        workdir,
        data_dir=workdir / "llmgw-data",
        codex_path=codex_path,
        codex_home=home,
        env={"OPENAI_API_KEY": OWNER_KEY, "JUPYTERHUB_API_TOKEN": HUB_TOKEN},
    )
    yield jupyter, workdir, allowed
    jupyter.stop()


def narrow_policy(allowed: Path) -> dict[str, Any]:
    rule = {
        "deny_if": [{"path": "args.sandbox", "op": "eq", "value": "danger-full-access"}],
        "arg_rules": [{"path": "args.working_dir", "op": "within", "value": [str(allowed)]}],
    }
    return {
        "version": "1",
        "default": "deny",
        "tools": {
            "codex_request": rule,
            "codex_request_async": rule,
            "codex_fork_session": {
                "deny_if": [{"path": "args.sandbox", "op": "eq", "value": "danger-full-access"}]
            },
            "llm_job_result": {},
        },
    }


async def grant(jupyter: JupyterProcess, name: str, policy: dict[str, Any]) -> str:
    async with httpx.AsyncClient(headers=jupyter.auth, timeout=WAIT) as client:
        made = await client.post(jupyter.api_url + "grants", json={"name": name, "policy": policy})
        assert made.status_code == 201, made.text
        return str(made.json()["token"])


async def test_a_narrow_grant_reaches_nothing_of_the_owners(
    setup: tuple[JupyterProcess, Path, Path],
) -> None:
    jupyter, workdir, allowed = setup
    token = await grant(jupyter, "attacker", narrow_policy(allowed))
    runtime_dir = workdir / "jupyter-runtime"
    assert list(runtime_dir.glob("jpserver-*.json")), "the server's token file exists"
    probe = (
        "echo PROBE; env; "
        f"cat {runtime_dir}/jpserver-*.json {workdir}/llmgw-data/llmgw.sqlite3 "
        f"{workdir}/codex-home/auth.json ~/.codex/auth.json 2>&1; "
        f"ls -la {workdir} {workdir}/llmgw-data 2>&1; "
        "grep -rl token / --include='jpserver-*' 2>/dev/null; echo END"
    )
    async with agent_session(jupyter.mcp_url, token, WAIT) as session:
        result = await session.call_tool(
            "codex_request",
            {
                "prompt": f"[mock-shell]{probe}[/mock-shell]",
                "working_dir": str(allowed),
                "wait_seconds": 60,
            },
        )
        assert result.is_error is False, result.content
        job = result.structured_content["job"]  # type: ignore[index]
        answer = str(job["final_message"])
        assert "PROBE" in answer and "END" in answer
        for secret in (jupyter.token, OWNER_KEY, HUB_TOKEN):
            assert secret not in answer, "an owner secret reached the grant"

        for tool, extra in (
            ("codex_request_async", {"working_dir": str(allowed)}),
            ("codex_fork_session", {"session_id": job["session_id"]}),
        ):
            for key, value in (
                ("openai_base_url", "http://127.0.0.1:9/v1"),
                ("default_permissions", ":danger-full-access"),
                ("shell_environment_policy.inherit", "all"),
            ):
                refused = await session.call_tool(
                    tool, {"prompt": "hi", "config_overrides": {key: value}, **extra}
                )
                assert refused.is_error is True
                text = " ".join(getattr(c, "text", "") for c in refused.content)
                assert key in text and "not an allowed Codex config key" in text


async def test_the_owners_rest_api_refuses_a_grant_token(
    setup: tuple[JupyterProcess, Path, Path],
) -> None:
    """Self-approval needed the owner's token; the grant's own token opens no REST route."""
    jupyter, _, allowed = setup
    token = await grant(jupyter, "self-approver", narrow_policy(allowed))
    async with httpx.AsyncClient(timeout=WAIT) as client:
        for path in ("approvals", "jobs", "grants", "summary"):
            for scheme in ("Bearer", "token"):
                answer = await client.get(
                    jupyter.api_url + path, headers={"Authorization": f"{scheme} {token}"}
                )
                assert answer.status_code in (401, 403), (path, answer.status_code)


async def test_an_allow_everything_grant_still_works_only_under_the_servers_root(
    setup: tuple[JupyterProcess, Path, Path],
) -> None:
    """Even a policy that allows everything cannot hand a grant the whole machine: "/" as the
    working dir would make everything but the protected paths visible to its jobs."""
    jupyter, workdir, allowed = setup
    token = await grant(jupyter, "allow-all", {"version": "1", "default": "allow"})
    async with agent_session(jupyter.mcp_url, token, WAIT) as session:
        for arguments in ({"working_dir": "/"}, {"working_dir": str(workdir)}):
            refused = await session.call_tool("codex_request_async", {"prompt": "hi", **arguments})
            assert refused.is_error is True
            text = " ".join(getattr(c, "text", "") for c in refused.content)
            assert "c.LLMGatewayApp.grant_roots" in text
        started = await session.call_tool("codex_request_async", {"prompt": "hi"})
        assert started.is_error is False, started.content
        job = started.structured_content["job"]  # type: ignore[index]
        assert job["working_dir"] == str((workdir / "root").resolve())
        assert allowed.parent == workdir / "root"

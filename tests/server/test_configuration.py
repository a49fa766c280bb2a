"""A bad setting stops the gateway from starting (fail closed), with an error that names it.

Jupyter Server only warns when an extension's settings cannot be read and then loads it anyway,
with none of them: without this rule a typo anywhere in ``c.LLMGatewayApp`` silently dropped the
owner's policy, the data dir and every limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import httpx
import pytest
from raw_mcp import INITIALIZE, bearer

from llmgw_jupyter.testing.jupyter_process import JupyterProcess, start_jupyter

WAIT = 30.0
START_WAIT = 120.0
NO_CODEX = "/nonexistent/codex"  # nothing here runs a job


async def jupyter_serves(server: JupyterProcess) -> None:
    """Poll Jupyter's own status route until it answers (bounded; a subprocess has no event)."""
    deadline = time.monotonic() + START_WAIT
    async with httpx.AsyncClient(timeout=5.0, headers=server.auth) as http:
        while time.monotonic() < deadline:
            assert server.process.poll() is None, server.log()[-4000:]
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{server.url}api/status")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise AssertionError(f"Jupyter did not serve in {START_WAIT} s:\n{server.log()[-4000:]}")


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("--LLMGatewayApp.isolation=nope", "isolation"),
        ("--LLMGatewayApp.max_running=many", "max_running"),
        ('--LLMGatewayApp.providers={"codex": {"colour": "red"}}', "colour"),
    ],
)
async def test_a_bad_setting_keeps_the_gateway_closed(
    tmp_path: Path, setting: str, named: str
) -> None:
    deny_all = tmp_path / "deny-all.json"
    deny_all.write_text(json.dumps({"version": "1", "default": "deny"}))
    server = start_jupyter(
        tmp_path,
        data_dir=tmp_path / "llmgw-data",
        codex_path=NO_CODEX,
        args=[f"--LLMGatewayApp.owner_policy={deny_all}", setting],
        wait=False,  # the gateway's routes never come: wait for Jupyter's own
    )
    try:
        await jupyter_serves(server)
        async with httpx.AsyncClient(timeout=WAIT) as http:
            summary = await http.get(f"{server.api_url}summary", headers=server.auth)
            mcp = await http.post(server.mcp_url, headers=bearer(server.token), json=INITIALIZE)
            jupyter = await http.get(f"{server.url}api/status", headers=server.auth)
        assert summary.status_code == 404, summary.text  # no gateway route at all
        assert mcp.status_code == 404, mcp.text
        assert jupyter.status_code == 200  # the rest of Jupyter serves
        log = server.log()
        assert "the gateway is NOT started: its configuration is invalid" in log
        assert named in log.split("the gateway is NOT started", 1)[1].splitlines()[0]
        assert not (tmp_path / "llmgw-data" / "llmgw.sqlite3").exists()
    finally:
        server.stop()


async def test_valid_settings_start_the_gateway(tmp_path: Path) -> None:
    server = start_jupyter(
        tmp_path,
        data_dir=tmp_path / "llmgw-data",
        codex_path=NO_CODEX,
        args=["--LLMGatewayApp.isolation=off", "--LLMGatewayApp.max_running=2"],
    )
    try:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            summary = await http.get(f"{server.api_url}summary", headers=server.auth)
        assert summary.status_code == 200, summary.text
        assert "the gateway is NOT started" not in server.log()
    finally:
        server.stop()

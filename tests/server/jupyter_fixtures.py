"""pytest-jupyter's server fixtures on pytest-asyncio's loop, plus an llmgw-enabled server.

Why not ``pytest_plugins``: it only works in the root conftest, and pytest-jupyter's own
``pytest_pyfunc_call`` would take over every async test. Test modules import these names
(``from jupyter_fixtures import *``), so only they get the fixtures. ``jp_asyncio_loop`` is
replaced by the running pytest-asyncio loop: the server, its HTTP client and the test then share
one loop.

pytest-jupyter starts the server with ``start_app()`` only, so extension start hooks do not run:
``llmgw`` awaits ``start_extension`` itself; ``jp_server_cleanup`` stops the extensions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_jupyter.jupyter_core as _core
import pytest_jupyter.jupyter_server as _server
import pytest_jupyter.pytest_tornasync as _tornasync
from traitlets.config import Config

from llmgw_jupyter.server.handlers import SERVICE_KEY
from llmgw_jupyter.server.service import GatewayService
from llmgw_jupyter.testing import fake_cli

FAKE_CODEX_CLASS = "llmgw_jupyter.testing.fake_provider:FakeCodexProvider"

_FIXTURES: dict[str, Any] = {}
for _module in (_core, _tornasync, _server):
    for _name, _obj in vars(_module).items():
        if not _name.startswith("pytest_") and type(_obj).__name__ == "FixtureFunctionDefinition":
            _FIXTURES[_name] = _obj
globals().update(_FIXTURES)


@pytest.fixture
async def jp_asyncio_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    yield asyncio.get_running_loop()


@pytest.fixture
def llmgw_config(tmp_path: Path, codex_home: Path, codex_path: str) -> dict[str, Any]:
    """``LLMGatewayApp`` settings: private data dir, the real Codex against the mock model."""
    return {
        "data_dir": str(tmp_path / "llmgw-data"),
        "codex_path": codex_path,
        "codex_home": str(codex_home),
        "heartbeat_seconds": 0.5,
    }


def fake_codex_providers(home: Path) -> dict[str, dict[str, Any]]:
    """``LLMGatewayApp.providers``: the fake CLI behind Codex's tools, so jobs need no Codex.

    For tests of the server's surfaces (REST shapes, streams, paging) where any job will do.
    """
    return {"codex": {"class": FAKE_CODEX_CLASS, "path": fake_cli.__file__, "home": str(home)}}


@pytest.fixture
def llmgw_fake_config(tmp_path: Path) -> dict[str, Any]:
    """``LLMGatewayApp`` settings: private data dir, the fake CLI behind Codex's tools."""
    return {
        "data_dir": str(tmp_path / "llmgw-data"),
        "providers": fake_codex_providers(tmp_path / "fake-home"),
        "heartbeat_seconds": 0.5,
    }


@pytest.fixture
def jp_server_config(llmgw_config: dict[str, Any]) -> Config:
    return Config(
        {
            "ServerApp": {
                "jpserver_extensions": {"llmgw_jupyter": True},
                "allow_unauthenticated_access": False,
            },
            "LLMGatewayApp": llmgw_config,
        }
    )


@dataclass
class Served:
    service: GatewayService
    base_url: str  # http://127.0.0.1:PORT/a%40b/
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest.fixture
async def llmgw(jp_serverapp: Any, http_server_client: Any, jp_base_url: str) -> Served:
    """The server with the llmgw extension started (what ``_post_start`` does in production)."""
    await jp_serverapp.extension_manager.start_extension("llmgw_jupyter")
    service: GatewayService = jp_serverapp.web_app.settings[SERVICE_KEY]
    assert service.state == "running", service.failure
    port = http_server_client.get_http_port()
    return Served(
        service, f"http://127.0.0.1:{port}{jp_base_url}", jp_serverapp.identity_provider.token
    )


@pytest.fixture
async def owner_api(llmgw: Served) -> AsyncIterator[httpx.AsyncClient]:
    """The owner's REST client (Jupyter token) on ``{base_url}llmgw/api/``."""
    async with httpx.AsyncClient(
        base_url=llmgw.url("llmgw/api/"), headers=llmgw.auth, timeout=30.0
    ) as client:
        yield client


async def grant_token(
    owner_api: httpx.AsyncClient, name: str, policy: dict[str, Any] | None = None
) -> str:
    """Create a grant over REST (allow everything unless ``policy``); its token."""
    policy = policy if policy is not None else {"version": "1", "default": "allow"}
    resp = await owner_api.post("grants", json={"name": name, "policy": policy})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


__all__ = [
    *_FIXTURES,
    "FAKE_CODEX_CLASS",
    "Served",
    "fake_codex_providers",
    "grant_token",
    "jp_asyncio_loop",
    "jp_server_config",
    "llmgw",
    "llmgw_config",
    "llmgw_fake_config",
    "owner_api",
]

"""The two gateway clients: the same answers from the server's REST API and an embedded runtime.

The server runs the fake CLI behind Codex's tools (no Codex needed); the embedded runtime runs
the real Codex where a job runs (``job_client``), so a job looks a little different on each side
(``TWO_STEPS``)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmgw_jupyter.kernel import client as client_module
from llmgw_jupyter.kernel.client import (
    EmbeddedClient,
    GatewayCallError,
    GatewayClient,
    RestClient,
    _rest_error,
    api_base,
    connect,
)
from llmgw_jupyter.providers.codex import describe_model
from llmgw_jupyter.runtime import Runtime, RuntimeConfig
from llmgw_jupyter.testing.codex_home import render_config
from llmgw_jupyter.testing.jupyter_process import JupyterProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _kernel_env(kernel_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The mock model and the owner policy, as the kernels get them."""
    for key in ("CODEX_HOME", "LLMGW_POLICY"):
        monkeypatch.setenv(key, kernel_env[key])
    monkeypatch.delenv("LLMGW_SERVER_URL", raising=False)
    monkeypatch.delenv("LLMGW_DATA_DIR", raising=False)


@pytest.fixture
def gateway_server(fake_gateway_server: JupyterProcess) -> JupyterProcess:
    """The server of this module: the fake CLI behind Codex's tools."""
    return fake_gateway_server


@pytest.fixture
def rest(gateway_server: JupyterProcess) -> Iterator[RestClient]:
    client = RestClient(gateway_server.url, gateway_server.token)
    yield client
    client.close()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedClient]:
    """An embedded runtime: enough for everything but running a job (see ``embedded_codex``)."""
    client = EmbeddedClient(tmp_path / "data")
    yield client
    client.close()


@pytest.fixture
def embedded_codex(
    module_codex_path: str, monkeypatch: pytest.MonkeyPatch, embedded: EmbeddedClient
) -> EmbeddedClient:
    """The embedded runtime with the real Codex, for tests that run a job in it."""
    monkeypatch.setenv("LLMGW_CODEX_PATH", module_codex_path)
    return embedded


@pytest.fixture(params=["rest", "embedded"])
def any_client(request: pytest.FixtureRequest) -> GatewayClient:
    client: GatewayClient = request.getfixturevalue(request.param)
    return client


@pytest.fixture(params=["rest", pytest.param("embedded_codex", marks=pytest.mark.codex)])
def job_client(request: pytest.FixtureRequest) -> GatewayClient:
    """A client whose jobs run: the fake behind the server, the real Codex embedded."""
    client: GatewayClient = request.getfixturevalue(request.param)
    return client


# A job with two progress steps 0.3 s apart, by client kind: (prompt, progress event type, the
# answer, the CLI's first line in the raw output). The fake CLI drops its knobs from the answer.
TWO_STEPS = {
    "rest": (
        "Hello [fake:events=2,step_delay=0.3]",
        "fake.progress",
        "echo: Hello",
        '"type": "session"',
    ),
    "embedded": (
        "Hello [mock:steps=2,step_delay=0.3]",
        "item.completed",
        "echo: Hello [mock:steps=2,step_delay=0.3]",
        '"thread.started"',
    ),
}


def test_api_base_accepts_the_server_url_or_the_api_url() -> None:
    assert api_base("http://h:1/") == "http://h:1/llmgw/api/"
    assert api_base("http://h:1/base") == "http://h:1/base/llmgw/api/"
    assert api_base("http://h:1/base/llmgw/api/") == "http://h:1/base/llmgw/api/"


def test_rest_errors_keep_the_gateway_category_message_and_field() -> None:
    body = {"error": {"category": "invalid_input", "message": "x: bad", "field": "x"}}
    error = _rest_error(400, body, "")
    assert (error.category, error.message, error.field, error.status) == (
        "invalid_input",
        "x: bad",
        "x",
        400,
    )
    denied = {
        "is_error": True,
        "text": "[POLICY DENIED] no",
        "structured": {"decision": "deny", "error": {"category": "policy_denied", "message": "no"}},
    }
    error = _rest_error(403, denied, "")
    assert (error.category, error.message, error.detail["decision"]) == (
        "policy_denied",
        "no",
        "deny",
    )
    assert _rest_error(502, None, "<html>bad gateway</html>").category == "unreachable"
    assert _rest_error(404, None, "").category == "not_found"


def test_bare_statuses_map_to_the_categories_the_server_uses() -> None:
    """One table on both sides: a 401 is ``unauthorized`` (``auth_error`` is a job's CLI failing
    to sign in to its model), a 503 ``unavailable`` (not ``saturated``: a stopping gateway)."""
    assert _rest_error(401, None, "").category == "unauthorized"
    assert _rest_error(503, None, "").category == "unavailable"
    assert _rest_error(405, None, "").category == "invalid_input"
    assert _rest_error(418, None, "").category == "http_error"
    newer = {"error": {"category": "from_the_future", "message": "m", "field": None}}
    assert (_rest_error(400, newer, "").category, _rest_error(400, newer, "").message) == (
        "from_the_future",
        "m",
    )


async def test_submit_wait_and_collect_from_the_kernels_loop(
    job_client: GatewayClient, tmp_path: Path
) -> None:
    """Awaited on this (the 'kernel') loop, the work runs on the client's own loop."""
    any_client = job_client
    prompt, progress, answer, first_line = TWO_STEPS[any_client.kind]
    submitted = await any_client.call_tool(
        "codex_request_async", {"prompt": prompt, "working_dir": str(tmp_path)}
    )
    job = submitted["job"]
    assert job["status"] == "queued"
    after, types = 0, []
    loop = asyncio.get_running_loop()
    while job["status"] not in ("succeeded", "failed"):
        started = loop.time()
        events, job = await any_client.wait_events(job["id"], after, 10)
        assert events or job["status"] in ("succeeded", "failed")
        assert loop.time() - started < 5, "a wait ends when something happens"
        after = events[-1]["seq"] if events else after
        types += [event["type"] for event in events]
    assert job["status"] == "succeeded"
    assert types.count(progress) == 2
    result = await any_client.job_result(job["id"])
    assert result["final_message"] == answer
    assert first_line in result["output"]["data"]
    jobs, total = await any_client.list_jobs(limit=5)
    assert total >= 1 and job["id"] in [j["id"] for j in jobs]
    sessions = await any_client.sessions()
    assert job["session_id"] in [s["session_id"] for s in sessions]


def test_blocking_calls_work_from_any_thread_while_a_loop_runs(
    any_client: GatewayClient, tmp_path: Path
) -> None:
    """A cell blocks in the kernel's thread while the kernel's loop is running."""
    answers: list[Any] = []

    async def in_a_running_loop() -> None:
        summary = any_client.blocking(any_client.summary())
        answers.append(summary)

    thread = threading.Thread(target=lambda: asyncio.run(in_a_running_loop()))
    thread.start()
    thread.join(30)
    assert "queued" in answers[0]["counts"]


async def test_refusals_are_gateway_call_errors(any_client: GatewayClient, tmp_path: Path) -> None:
    with pytest.raises(GatewayCallError) as missing:
        await any_client.get_job("nosuchjob")
    assert missing.value.category == "not_found"
    with pytest.raises(GatewayCallError) as denied:
        await any_client.call_tool(
            "codex_request_async",
            {"prompt": "x", "sandbox": "danger-full-access", "working_dir": str(tmp_path)},
        )
    assert denied.value.category == "policy_denied"
    assert denied.value.message == "danger-full-access is not allowed here"
    with pytest.raises(GatewayCallError) as invalid:
        await any_client.call_tool("codex_request_async", {"prompt": ""})
    assert invalid.value.category == "invalid_input" and invalid.value.field == "prompt"
    with pytest.raises(GatewayCallError) as unknown:
        await any_client.decide_approval("apr_nosuch", True)
    assert unknown.value.category == "not_found"


async def test_cancel_and_grants(job_client: GatewayClient, tmp_path: Path) -> None:
    any_client = job_client
    submitted = await any_client.call_tool(
        "codex_request_async",
        {"prompt": "Slow [mock:delay=30] [fake:delay=30]", "working_dir": str(tmp_path)},
    )
    cancelled = await any_client.cancel_job(submitted["job"]["id"])
    assert cancelled["status"] == "cancelled"
    name = f"g{time.monotonic_ns()}"
    grant = await any_client.create_grant(name, {"version": "1", "default": "deny"})
    assert grant["name"] == name and grant["token"]
    assert isinstance(await any_client.approvals("all"), list)


async def test_the_embedded_client_moves_aside_from_a_held_data_dir(tmp_path: Path) -> None:
    holder = Runtime(RuntimeConfig(data_dir=tmp_path / "data"))
    await holder.start()
    try:
        client = await asyncio.to_thread(EmbeddedClient, tmp_path / "data")
        try:
            assert client.data_dir != tmp_path / "data"
            assert client.data_dir.parent == tmp_path
            assert client.data_dir.name.startswith("data-kernel-")
            assert (
                client.fallback_reason
                == f"{tmp_path / 'data'} is in use by a running gateway server"
            )
            assert client.fallback_reason in client.description
            second = await asyncio.to_thread(EmbeddedClient, tmp_path / "data")
            try:
                assert second.data_dir.name.endswith(f"-{os.getpid()}")
            finally:
                await asyncio.to_thread(second.close)
        finally:
            await asyncio.to_thread(client.close)
    finally:
        await holder.close()


def test_connect_chooses_once_and_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gateway_server: JupyterProcess
) -> None:
    monkeypatch.setattr(client_module, "_client", None)
    said: list[str] = []
    monkeypatch.setenv("LLMGW_SERVER_URL", gateway_server.url)
    monkeypatch.setenv("LLMGW_SERVER_TOKEN", gateway_server.token)
    first = connect(said.append)
    try:
        assert connect(said.append) is first
        assert first.kind == "rest"
        assert said == [
            f"llmgw: using the Jupyter server's gateway at {gateway_server.url}; "
            "jobs outlive this kernel."
        ]
        monkeypatch.setenv("LLMGW_SERVER_TOKEN", "wrong")
        monkeypatch.setenv("LLMGW_DATA_DIR", str(tmp_path / "data"))
        second = connect(said.append, refresh=True)
        assert second.kind == "embedded"
        assert said[-1].startswith(
            f"llmgw: the gateway server at {gateway_server.url} is not usable ("
        )
        assert "using an embedded gateway in this process" in said[-1]
    finally:
        current = client_module.current_client()
        if current is not None:
            current.close()
        client_module.set_client(None)


@pytest.mark.parametrize(
    ("config", "local_echo", "label"),
    [
        (render_config("http://127.0.0.1:8765/v1"), True, "local echo model"),
        (render_config("http://localhost:8765/v1"), True, "local echo model"),
        (render_config("http://[::1]:8765/v1"), True, "local echo model"),
        (render_config("https://echo.example.org/v1"), False, "gpt-5.5"),
        (render_config("http://127.0.0.1:8765/v1", provider="other"), False, "gpt-5.5"),
        ('model = "o4"\n', False, "o4"),
        ("not [ toml", False, "Codex's default model"),
        (None, False, "Codex's default model"),
    ],
)
def test_describe_model_knows_the_local_echo_model(
    tmp_path: Path, config: str | None, local_echo: bool, label: str
) -> None:
    if config is not None:
        (tmp_path / "config.toml").write_text(config)
    described = describe_model(str(tmp_path))
    assert described["local_echo"] is local_echo
    assert described["label"].startswith(label)


def test_model_info_comes_from_the_summary_and_tolerates_its_absence(
    embedded: EmbeddedClient,
) -> None:
    assert embedded.blocking(embedded.model_info()) == {
        "local_echo": True,
        "label": "local echo model (answers repeat the prompt)",
    }

    class OlderServer(RestClient):
        async def summary(self) -> dict[str, Any]:
            return {"counts": {}, "pending_approvals": 0}

    older = OlderServer("http://127.0.0.1:9/", None)
    try:
        assert older.blocking(older.model_info()) is None
    finally:
        older.close()


# -- the embedded gateway's providers ----------------------------------------------------------
def test_the_embedded_gateway_runs_the_providers_llmgw_providers_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LLMGW_PROVIDERS`` (JSON like ``c.LLMGatewayApp.providers``) registers a provider in the
    kernel's own gateway, as the server's setting does: here the fake, with no Codex around."""
    monkeypatch.setenv(
        "LLMGW_PROVIDERS",
        '{"fake": {"class": "llmgw_jupyter.testing.fake_provider:FakeProvider"}}',
    )
    client = EmbeddedClient(tmp_path / "data")
    try:
        work = tmp_path / "work"
        work.mkdir()
        started = client.blocking(
            client.call_tool(
                "fake_request", {"prompt": "hello", "working_dir": str(work), "wait_seconds": 60}
            )
        )
        assert started["done"] is True
        assert started["job"]["provider"] == "fake"
        assert started["final_message"] == "echo: hello"
    finally:
        client.close()


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("{not json", "LLMGW_PROVIDERS: "),
        ('{"fake": {"class": "no_such_module:X"}}', "provider 'fake', setting 'class'"),
        ('["codex"]', "must be an object"),
    ],
)
def test_a_bad_llmgw_providers_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, said: str
) -> None:
    monkeypatch.setenv("LLMGW_PROVIDERS", value)
    with pytest.raises(Exception) as caught:
        EmbeddedClient(tmp_path / "data")
    assert "LLMGW_PROVIDERS" in str(caught.value) and said in str(caught.value)

"""Browser end-to-end fixtures: a real ``jupyter lab`` with the llmgw extensions, headless Chromium.

``lab`` is one JupyterLab server per test module (the real Codex CLI against a mock model).
``page`` is a fresh headless Chromium (``/usr/bin/chromium``, never a downloaded browser) per test,
logged in with the server's token. Screenshots and failure diagnostics go to ``test-output/ui/``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from llmgw_jupyter.testing.codex_home import write_codex_home
from llmgw_jupyter.testing.jupyter_process import JupyterProcess, start_jupyter
from llmgw_jupyter.testing.mock_responses import MockResponsesServer

OUTPUT_DIR = Path(__file__).resolve().parents[2] / "test-output" / "ui"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
]


@pytest.fixture(scope="module")
def lab_model() -> Iterator[MockResponsesServer]:
    """The mock Responses API the lab's Codex jobs talk to (shared by the module's tests)."""
    with MockResponsesServer() as server:
        yield server


@pytest.fixture(scope="module")
def lab_server_config() -> str | None:
    """Extra ``jupyter_server_config.py`` for the module's lab (a module overrides this)."""
    return None


@pytest.fixture(scope="module")
def lab(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    lab_model: MockResponsesServer,
    codex_path: str,
    lab_server_config: str | None,
) -> Iterator[JupyterProcess]:
    """One JupyterLab per module; tests tell their jobs apart by id, grant name and prompt.
    Its log goes to ``test-output/ui/jupyter-lab-<module>.log``."""
    workdir = tmp_path_factory.mktemp("lab")
    home = write_codex_home(workdir / "codex-home", lab_model.base_url)
    if lab_server_config is not None:
        (workdir / "jupyter-config").mkdir()
        (workdir / "jupyter-config" / "jupyter_server_config.py").write_text(lab_server_config)
    server = start_jupyter(
        workdir, app="lab", data_dir=workdir / "llmgw", codex_path=codex_path, codex_home=home
    )
    yield server
    try:
        server.stop()
    finally:
        OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
        module = request.module.__name__.rsplit(".", 1)[-1]
        (OUTPUT_DIR / f"jupyter-lab-{module}.log").write_text(server.log())


@pytest.fixture
async def rest(lab: JupyterProcess) -> AsyncIterator[httpx.AsyncClient]:
    """The owner's REST client (the Jupyter token)."""
    async with httpx.AsyncClient(base_url=lab.api_url, headers=lab.auth, timeout=30.0) as client:
        yield client


@pytest.fixture
def output_dir() -> Path:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    return OUTPUT_DIR


CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(
    browser: Browser, lab: JupyterProcess, output_dir: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Page]:
    """JupyterLab open in a fresh browser context, logged in with the token.

    On failure the page's screenshot and console log are saved next to the other screenshots.
    """
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    opened = await context.new_page()
    console: list[str] = []
    opened.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    opened.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    await opened.goto(lab.lab_url)
    try:
        yield opened
    finally:
        if request.node.stash.get(CALL_FAILED, False):
            name = request.node.name
            with contextlib.suppress(Exception):
                await opened.screenshot(path=output_dir / f"{name}-failure.png")
            (output_dir / f"{name}-console.log").write_text("\n".join(console))
        await context.close()

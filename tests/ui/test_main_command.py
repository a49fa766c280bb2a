"""The main command itself: ``./scripts/lab.sh`` from a clean copy, as a new user runs it.

The copy holds the repository's committed files only (as a fresh clone would), and the script runs
with no Codex or Anthropic credentials (no API keys, an empty ``$HOME``): set-up, the local echo
models of Codex and Claude Code, JupyterLab with the gateway. Headless Chromium opens the URL the
script prints, runs the quickstart notebook through the menus and finds the echo models' answers in
the outputs. A restart keeps the URL, and extra ``--LLMGatewayApp.*`` options override the
script's own.

Set-up dominates the cost: a new virtualenv, ``pip install -e`` from the pip and npm caches and
the Codex CLI (about a minute on two cores; the whole module about two). The copy reuses the
checkout's built lab extension when it is up to date with ``labextension/src``, so the editable
install skips the npm build (over a minute more); ``LLMGW_MAIN_COMMAND_FRESH_BUILD=1`` builds it
from scratch as a new user's first run does. ``LLMGW_MAIN_COMMAND_REF`` tests another commit.
Logs go to ``test-output/main-command/``, the notebook's screenshot to ``test-output/ui/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from llmgw_jupyter.testing.codex_home import write_codex_home
from llmgw_jupyter.testing.jupyter_process import LAB_SETTINGS
from llmgw_jupyter.testing.mcp_agent import agent_session
from llmgw_jupyter.testing.mock_anthropic import MockAnthropicServer
from llmgw_jupyter.testing.mock_responses import MockResponsesServer

REPO = Path(__file__).resolve().parents[2]
SETUP_TIMEOUT = 900.0  # s: a fresh virtualenv, pip from its cache, maybe the npm build
SERVE_TIMEOUT = 90.0  # s: from the printed URL to JupyterLab and the gateway answering
STOP_TIMEOUT = 30.0  # s: lab.sh, Jupyter, kernels and the echo model after SIGTERM
LAB_LOAD = 90_000  # ms
RUN_ALL = 240_000  # ms: every quickstart cell, several Codex jobs against the echo model
UI = 15_000  # ms
URL_LINE = re.compile(r"^llmgw: JupyterLab\s+(?P<url>http://\S+)$", re.MULTILINE)
DIRECT_LINE = re.compile(
    r"^llmgw: MCP direct\s+(?P<url>http://127\.0\.0\.1:\d+/mcp)$", re.MULTILINE
)
# Credentials and settings of the machine running the suite that must not reach the script.
WITHHELD_ENV = ("OPENAI_API_KEY", "CODEX_API_KEY", "CODEX_HOME", "VIRTUAL_ENV", "DISPLAY")
WITHHELD_PREFIXES = ("LLMGW_", "JUPYTER_", "JUPYTERLAB_", "WAYLAND_", "ANTHROPIC_", "CLAUDE_")

pytestmark = pytest.mark.timeout(SETUP_TIMEOUT + 600)


def newest_mtime(root: Path) -> float:
    return max((path.stat().st_mtime for path in root.rglob("*") if path.is_file()), default=0.0)


def copy_committed_tree(source: Path, target: Path) -> None:
    """What a clone holds: the committed files with their modes, nothing built, no local state.

    The committed tree, not the working tree: what ships, unaffected by edits in progress.
    ``LLMGW_MAIN_COMMAND_REF`` names another commit (to see whether an older one passes).
    """
    ref = os.environ.get("LLMGW_MAIN_COMMAND_REF", "HEAD")
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref], cwd=source, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)


def reuse_built_lab_extension(source: Path, target: Path) -> bool:
    """Copy the checkout's lab extension build when it is newer than its sources.

    hatch-jupyter-builder skips the npm build of an editable install whose build is newer than
    ``labextension/src``: fresh mtimes make the copy so. A stale build is not copied.
    """
    built, sources = source / "llmgw_jupyter" / "labextension", source / "labextension" / "src"
    if os.environ.get("LLMGW_MAIN_COMMAND_FRESH_BUILD") == "1":
        return False
    if not (built / "static" / "style.js").is_file() or newest_mtime(sources) > newest_mtime(built):
        return False
    shutil.copytree(built, target / "llmgw_jupyter" / "labextension", copy_function=shutil.copy)
    return True


def user_env(home: Path, state: Path) -> dict[str, str]:
    """A user with no Codex credentials and no Jupyter set-up, sharing only download caches."""
    real_home = Path.home()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in WITHHELD_ENV and not key.startswith(WITHHELD_PREFIXES)
    }
    venv_bin = str(REPO / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["HOME"] = str(home)  # no ~/.codex/auth.json, no ~/.jupyter
    caches = Path(os.environ.get("XDG_CACHE_HOME", real_home / ".cache"))
    env.setdefault("PIP_CACHE_DIR", str(caches / "pip"))
    env.setdefault("npm_config_cache", str(real_home / ".npm"))
    env.setdefault("YARN_GLOBAL_FOLDER", str(real_home / ".yarn" / "berry"))
    for variable, config in (
        ("PIP_CONFIG_FILE", real_home / ".config" / "pip" / "pip.conf"),
        ("NPM_CONFIG_USERCONFIG", real_home / ".npmrc"),
    ):
        if config.is_file():
            env.setdefault(variable, str(config))
    for name in ("config", "data", "runtime"):
        env[f"JUPYTER_{name.upper()}_DIR"] = str(state / f"jupyter-{name}")
    env["JUPYTERLAB_SETTINGS_DIR"] = str(state / "jupyterlab-settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(state / "jupyterlab-workspaces")
    env["LLMGW_DATA_DIR"] = str(state / "llmgw")
    env["LLMGW_LAB_PORT"] = str(free_port_range_start())
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port_range_start() -> int:
    """A port the OS just handed out: free now, and lab.sh tries it first."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The user's lab settings (not the script's): no "official Jupyter news?" prompt over the menus,
# and every cell rendered (no windowing), so that outputs below the fold are in the DOM.
USER_LAB_SETTINGS = {
    **LAB_SETTINGS,
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def write_lab_settings(settings_dir: Path) -> None:
    for name, values in USER_LAB_SETTINGS.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@dataclass
class Checkout:
    root: Path
    env: dict[str, str]
    logs: Path
    reused_build: bool


@dataclass
class RunningLab:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    setup_seconds: float

    @property
    def origin(self) -> str:
        return re.sub(r"^(http://[^/]+).*$", r"\1", self.url)

    @property
    def token(self) -> str:
        match = re.search(r"[?&]token=([^&]+)", self.url)
        assert match, self.url
        return match.group(1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_lab_script(
    checkout: Checkout, *args: str, name: str, env: dict[str, str] | None = None
) -> RunningLab:
    """Run ``./scripts/lab.sh ARGS`` in its own process group; return once its URL serves.

    ``env`` goes over the checkout's user environment."""
    log_path = checkout.logs / f"{name}.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(checkout.root / "scripts" / "lab.sh"), *args],
            cwd=checkout.root,
            env={**checkout.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = wait_for_url(process, log_path, started + SETUP_TIMEOUT)
        lab = RunningLab(process, url, log_path, time.monotonic() - started)
        wait_serving(lab, time.monotonic() + SERVE_TIMEOUT)
    except BaseException:
        stop_lab_script(process)
        raise
    return lab


def wait_for_url(process: subprocess.Popen[bytes], log_path: Path, deadline: float) -> str:
    """The JupyterLab URL lab.sh prints once set-up is done (polling its log: no event to wait)."""
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if match := URL_LINE.search(text):
            return match.group("url")
        if process.poll() is not None:
            pytest.fail(f"lab.sh exited ({process.returncode}) before its URL:\n{text[-6000:]}")
        time.sleep(0.5)
    pytest.fail(f"lab.sh printed no URL in {SETUP_TIMEOUT} s:\n{log_path.read_text()[-6000:]}")


def wait_serving(lab: RunningLab, deadline: float) -> None:
    """The printed URL answers 200 and so does the gateway's REST API (its extension loaded)."""
    pending = [lab.url, f"{lab.origin}/llmgw/api/summary"]
    headers = {"Authorization": f"token {lab.token}"}
    with httpx.Client(timeout=5.0, headers=headers) as client:
        while pending and time.monotonic() < deadline:
            if lab.process.poll() is not None:
                pytest.fail(f"lab.sh exited ({lab.process.returncode}):\n{lab.log()[-6000:]}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(pending[0]).status_code == 200:
                    pending.pop(0)
                    continue
            time.sleep(0.2)
    if pending:
        pytest.fail(f"{pending[0]} did not answer 200 in time:\n{lab.log()[-6000:]}")


def stop_lab_script(process: subprocess.Popen[bytes]) -> list[str]:
    """SIGTERM to lab.sh's process group; return what outlived it, after killing it.

    Descendants are collected first: kernels and Codex runs may sit in process groups of their
    own, and lab.sh must still end them (through Jupyter's shutdown) within STOP_TIMEOUT.
    """
    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=STOP_TIMEOUT)
    survivors = []
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            survivors.append(" ".join(proc.cmdline())[:200])
            proc.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=10)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)
    return survivors


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Checkout:
    """A clean copy of the repository and the environment of a user without credentials."""
    base = tmp_path_factory.mktemp("main-command")
    root, home, state = base / "llmgw-jupyter", base / "home", base / "state"
    for path in (root, home, state):
        path.mkdir()
    copy_committed_tree(REPO, root)
    reused = reuse_built_lab_extension(REPO, root)
    env = user_env(home, state)
    write_lab_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
    logs = REPO / "test-output" / "main-command"
    logs.mkdir(parents=True, exist_ok=True)
    return Checkout(root, env, logs, reused)


@pytest.fixture
def first_run(checkout: Checkout) -> Iterator[RunningLab]:
    """``./scripts/lab.sh`` with no arguments, the first time in this copy (the whole set-up)."""
    lab = start_lab_script(checkout, name="first-run")
    built = "reused" if checkout.reused_build else "built"
    print(f"lab.sh set-up and start: {lab.setup_seconds:.0f} s (lab extension {built})")
    yield lab
    assert stop_lab_script(lab.process) == [], "processes outlived lab.sh"


@pytest.fixture
async def lab_page(
    browser: Browser, first_run: RunningLab, output_dir: Path
) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    try:
        yield page
    finally:
        with contextlib.suppress(Exception):
            await page.screenshot(path=output_dir / "main-command-quickstart.png", full_page=True)
        (output_dir / "main-command-console.log").write_text("\n".join(console))
        await context.close()


async def choose_menu_item(page: Page, menu: str, item: str) -> None:
    await page.locator("#jp-menu-panel").get_by_role("menuitem", name=menu, exact=True).click()
    await page.get_by_role("menuitem", name=item, exact=True).click()


def cell_with_source(notebook: Locator, source: str) -> Locator:
    """The code cell whose input contains ``source``."""
    code = notebook.page.locator(".jp-InputArea-editor", has_text=source)
    return notebook.locator(".jp-CodeCell", has=code)


# Quickstart cells (by a piece of their source) and a text each one's outputs must show.
EXPECTED_OUTPUTS = {
    "job = %codex_async Explain": "using the Jupyter server's gateway",
    "answer = job.result": "echo: Explain in two sentences what a Python generator is.",
    "print(fixed.final_message)": "echo: Find the bug in this function",
    "%codex_async --wait Summarise": "echo: Summarise the Zen of Python in one line.",
    "%codex_fork --wait job": "echo: Now explain it to a ten-year-old.",
    "child = job.fork(": "echo: Give one short code example.",
    "claude_job.result(": "echo: Explain in one sentence what a Python decorator is.",
    "%claude_fork --wait": "echo: Now give a one-line example.",
    'print("forked session:"': "forked session: ",
    "usage = claude_child": " out, $",
    "%llm_result": "echo: Explain in two sentences what a Python generator is.",
    "slow.cancel()": "cancelled",
    "--sandbox danger-full-access": "refused by policy",
}


async def test_the_quickstart_runs_from_a_fresh_copy_without_credentials(
    lab_page: Page, first_run: RunningLab, checkout: Checkout
) -> None:
    page = lab_page
    committed = (checkout.root / "notebooks" / "quickstart.ipynb").read_bytes()
    log = first_run.log()
    assert "Codex jobs use the LOCAL ECHO MODEL" in log, log[-3000:]
    assert "Claude Code jobs use the LOCAL ECHO MODEL" in log, log[-3000:]
    assert re.fullmatch(
        r"http://127\.0\.0\.1:\d+/lab/tree/quickstart\.ipynb\?token=\w+", first_run.url
    )

    # The printed URL opens the quickstart, whose kernel starts by itself.
    await page.goto(first_run.url)
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
    await expect(notebook).to_be_visible(timeout=LAB_LOAD)
    current_tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current")
    await expect(current_tab).to_contain_text("quickstart.ipynb", timeout=UI)
    kernel_idle = page.locator("#jp-main-statusbar").get_by_role(
        "button", name="Python 3 (ipykernel) | Idle"
    )
    await expect(kernel_idle).to_be_visible(timeout=LAB_LOAD)

    # Outputs from this run only (whatever the file holds is cleared), then Run All.
    await choose_menu_item(page, "Edit", "Clear Outputs of All Cells")
    await expect(notebook.locator(".jp-OutputArea-output")).to_have_count(0, timeout=UI)
    await choose_menu_item(page, "Run", "Run All Cells")

    # Run All stops at the first cell that raises; the last cell is refused by the owner's policy.
    outputs = notebook.locator(".jp-OutputArea-output")
    last_cell_done = notebook.locator(".jp-CodeCell").last.locator(
        ".jp-OutputArea-output", has_text="refused by policy"
    )
    raised = outputs.filter(has_text="Traceback")
    await expect(last_cell_done.or_(raised).first).to_be_visible(timeout=RUN_ALL)
    tracebacks = await raised.all_inner_texts()
    assert not tracebacks, tracebacks
    await expect(kernel_idle).to_be_visible(timeout=UI)
    for source, text in EXPECTED_OUTPUTS.items():
        cell = cell_with_source(notebook, source)
        await expect(cell).to_have_count(1)
        await expect(cell.locator(".jp-OutputArea")).to_contain_text(text)
    prompts = await notebook.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
    assert all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in prompts), prompts

    # Saving keeps the outputs in the git-ignored working copy; the committed notebook is clean.
    await page.keyboard.press("Control+s")
    working = checkout.root / ".llmgw-demo" / "notebooks" / "quickstart.ipynb"
    deadline = asyncio.get_running_loop().time() + UI / 1000
    while b"echo: Summarise" not in working.read_bytes():
        assert asyncio.get_running_loop().time() < deadline, "the working copy was not saved"
        await asyncio.sleep(0.1)
    assert (checkout.root / "notebooks" / "quickstart.ipynb").read_bytes() == committed


async def direct_job_list(url: str, token: str) -> list[dict[str, Any]]:
    """``llm_job_list`` over MCP at ``url`` with the official client; the jobs it lists."""
    async with agent_session(url, token) as session:
        answer = await session.call_tool("llm_job_list", {})
    assert not answer.is_error, answer.content
    assert answer.structured_content is not None
    jobs: list[dict[str, Any]] = answer.structured_content["jobs"]
    return jobs


def test_a_restart_keeps_the_url_and_extra_options_override_the_scripts_own(
    checkout: Checkout, tmp_path: Path
) -> None:
    before = start_lab_script(checkout, name="restart-before")
    assert stop_lab_script(before.process) == [], "processes outlived lab.sh"
    state = checkout.root / ".llmgw-demo"
    modes = (state.stat().st_mode & 0o777, (state / "lab-token").stat().st_mode & 0o777)
    assert modes == (0o700, 0o600)

    # Options the script also sets: the caller's win (no "only accepts one value, got 2"), and
    # the gateway runs Codex with the caller's CODEX_HOME and Claude with the caller's providers
    # and key instead of the script's echo models.
    anthropic_key = "sk-ant-main-command-test"
    with MockResponsesServer() as model, MockAnthropicServer() as anthropic:
        home = write_codex_home(tmp_path / "codex-home", model.base_url)
        providers = {"claude": {"options": {"base_url": anthropic.base_url}}}
        after = start_lab_script(
            checkout,
            f"--LLMGatewayApp.codex_home={home}",
            f"--LLMGatewayApp.providers={json.dumps(providers)}",
            "--ServerApp.ip=127.0.0.1",
            "--port-retries=0",
            name="restart-after",
            env={"ANTHROPIC_API_KEY": anthropic_key},
        )
        try:
            assert after.url == before.url  # same port (it was free), same token: tabs live on
            assert "only accepts one value" not in after.log()
            assert "LOCAL ECHO MODEL" not in after.log()
            prompt = "Which CODEX_HOME is this?"
            with httpx.Client(base_url=f"{after.origin}/llmgw/api/", timeout=120.0) as client:
                answer = client.post(
                    "tools/codex_request",
                    json={"prompt": prompt},
                    headers={"Authorization": f"token {after.token}"},
                )
                claude = client.post(
                    "tools/claude_request",
                    json={"prompt": "Which Anthropic API is this?", "wait_seconds": 90},
                    headers={"Authorization": f"token {after.token}"},
                )
            assert answer.status_code == 200, answer.text
            assert answer.json()["structured"]["final_message"] == f"echo: {prompt}"
            assert [r.last_user_text for r in model.requests] == [prompt]
            assert claude.status_code == 200, claude.text
            assert (
                claude.json()["structured"]["final_message"] == "echo: Which Anthropic API is this?"
            )
            assert [r.headers["x-api-key"] for r in anthropic.message_requests] == [anthropic_key]

            # The direct MCP listener the banner names serves the same gateway, same token.
            direct = DIRECT_LINE.search(after.log())
            assert direct is not None, after.log()[-3000:]
            listed = asyncio.run(direct_job_list(direct.group("url"), after.token))
            assert {job["final_message"] for job in listed} >= {f"echo: {prompt}"}
        finally:
            survivors = stop_lab_script(after.process)
    assert survivors == [], "processes outlived lab.sh"

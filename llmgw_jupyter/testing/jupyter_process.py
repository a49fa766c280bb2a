"""A real ``jupyter server`` or ``jupyter lab`` subprocess with llmgw, on a free loopback port.

Shared by the end-to-end tests (server, lab, kernel) and the benchmarks, so they all run exactly
what a user runs. Private Jupyter config, data and runtime dirs (and lab settings and workspace
dirs) keep the machine's own Jupyter set-up, or a previous run's restored layout, out.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

__all__ = [
    "LAB_EXTENSIONS",
    "LAB_SETTINGS",
    "SERVER_EXTENSIONS",
    "App",
    "JupyterProcess",
    "free_port",
    "start_jupyter",
]

App = Literal["server", "lab"]

START_TIMEOUT: dict[App, float] = {"server": 60.0, "lab": 90.0}
STOP_TIMEOUT = 30.0
# A bare server loads only the extensions the tests need: faster start, nothing else on the port.
SERVER_EXTENSIONS: Mapping[str, bool] = {
    "jupyterlab": False,
    "jupyter_lsp": False,
    "notebook_shim": False,
    "llmgw_jupyter": True,
}
# The lab has JupyterLab and llmgw on whatever the installed config says (others load as usual).
LAB_EXTENSIONS: Mapping[str, bool] = {"jupyterlab": True, "llmgw_jupyter": True}
# User settings of the private lab: no "official Jupyter news?" prompt, no update check, so the
# only notifications are the extension's own.
LAB_SETTINGS: Mapping[str, Mapping[str, Any]] = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}
# The lab server itself never fetches news or looks for updates (loopback only).
LAB_ARGS = (
    "--LabApp.news_url=None",
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
)
# Ready = these answer 200: the lab page (lab only), then the llmgw REST API (the extension's
# start hook has run).
READY_PATHS: dict[App, tuple[str, ...]] = {
    "server": ("llmgw/api/summary",),
    "lab": ("lab", "llmgw/api/summary"),
}
# The caller's own llmgw and Jupyter settings never reach the subprocess (``env`` may add some).
FILTERED_ENV = ("LLMGW_", "JUPYTER_", "JUPYTERLAB_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class JupyterProcess:
    """A started Jupyter subprocess: where it listens, its token, its llmgw data and its log."""

    process: subprocess.Popen[bytes]
    port: int
    token: str
    data_dir: Path
    log_path: Path
    app: App = "server"
    base_url: str = "/"
    root_dir: Path | None = None  # the server's root dir (grants' jobs work under it)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    @property
    def api_url(self) -> str:
        return self.url + "llmgw/api/"

    @property
    def mcp_url(self) -> str:
        return self.url + "llmgw/mcp"

    @property
    def lab_url(self) -> str:
        return f"{self.url}lab?token={self.token}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def kernel_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` plus what makes a kernel started elsewhere use this server's gateway."""
        return {**base, "LLMGW_SERVER_URL": self.url, "LLMGW_SERVER_TOKEN": self.token}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll until every ready path answers 200: a subprocess has no event to wait on."""
        timeout = START_TIMEOUT[self.app] if timeout is None else timeout
        deadline = time.monotonic() + timeout
        pending = [self.url + path for path in READY_PATHS[self.app]]
        with httpx.Client(timeout=5.0, headers=self.auth) as client:
            while pending and time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"jupyter {self.app} exited early:\n{self.log()[-4000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get(pending[0]).status_code == 200:
                        pending.pop(0)
                        continue
                time.sleep(0.05)
        if pending:
            log = self.log()[-4000:]
            raise TimeoutError(f"jupyter {self.app} not ready in {timeout} s:\n{log}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the process and wait; SIGKILL (and re-raise) if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
                raise
        return int(self.process.returncode)


def start_jupyter(
    workdir: Path,
    *,
    app: App = "server",
    data_dir: Path,
    codex_path: str,
    codex_home: Path | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    extensions: Mapping[str, bool] | None = None,
    lab_settings: Mapping[str, Mapping[str, Any]] | None = None,
    wait: bool = True,
) -> JupyterProcess:
    """Start ``python -m jupyter {app}`` with llmgw; by default returns once it serves.

    Everything lives under ``workdir``: the root dir, the private Jupyter dirs and the log.
    ``env`` goes over the filtered environment and the private dirs, so a caller can share its
    own Jupyter dirs (for instance the runtime dir with kernels it starts). ``extensions`` and
    ``lab_settings`` default to ``SERVER_EXTENSIONS``/``LAB_EXTENSIONS`` and ``LAB_SETTINGS``.
    """
    port = port or free_port()
    token = secrets.token_hex(16)
    names = ["root", "jupyter-config", "jupyter-data", "jupyter-runtime"]
    if app == "lab":
        names += ["jupyterlab-settings", "jupyterlab-workspaces"]
    dirs = {name: workdir / name for name in names}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    if extensions is None:
        extensions = LAB_EXTENSIONS if app == "lab" else SERVER_EXTENSIONS
    argv = [
        sys.executable,
        "-m",
        "jupyter",
        app,
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={dirs['root']}",
        f"--ServerApp.jpserver_extensions={dict(extensions)!r}",
        f"--LLMGatewayApp.data_dir={data_dir}",
    ]
    if codex_home is not None:
        argv.append(f"--LLMGatewayApp.codex_home={codex_home}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(FILTERED_ENV)}
    full_env.update(
        {
            "LLMGW_CODEX_PATH": codex_path,
            "JUPYTER_CONFIG_DIR": str(dirs["jupyter-config"]),
            "JUPYTER_DATA_DIR": str(dirs["jupyter-data"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["jupyter-runtime"]),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if app == "lab":
        argv += LAB_ARGS
        full_env["JUPYTERLAB_SETTINGS_DIR"] = str(dirs["jupyterlab-settings"])
        full_env["JUPYTERLAB_WORKSPACES_DIR"] = str(dirs["jupyterlab-workspaces"])
        settings = LAB_SETTINGS if lab_settings is None else lab_settings
        for name, values in settings.items():
            path = dirs["jupyterlab-settings"] / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
    argv += args
    full_env.update(env or {})
    log_path = workdir / f"jupyter-{app}-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, cwd=dirs["root"], env=full_env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    server = JupyterProcess(process, port, token, data_dir, log_path, app, root_dir=dirs["root"])
    if wait:
        try:
            server.wait_ready()
        except BaseException:
            server.stop(signal.SIGKILL)
            raise
    return server

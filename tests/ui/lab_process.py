"""A real ``jupyter lab`` subprocess with the llmgw extensions, on a free loopback port.

Private Jupyter config, data, runtime, settings and workspace dirs, so nothing of the machine's own
Jupyter set-up (or a previous run's restored layout) leaks in.
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
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
OUTPUT_DIR = REPO_ROOT / "test-output" / "ui"
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
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
# JupyterLab and llmgw are on whatever the installed config says (others load as usual).
EXTENSIONS = "{'jupyterlab': True, 'llmgw_jupyter': True}"
# User settings of the private lab: no "official Jupyter news?" prompt, no update check, so the
# only notifications are the extension's own.
USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LabServer:
    process: subprocess.Popen[bytes]
    port: int
    token: str
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def lab_url(self) -> str:
        return f"{self.url}lab?token={self.token}"

    @property
    def api_url(self) -> str:
        return self.url + "llmgw/api/"

    @property
    def mcp_url(self) -> str:
        return self.url + "llmgw/mcp"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Ready = the lab page and the llmgw REST API both answer 200."""
        deadline = time.monotonic() + timeout
        pending = [self.url + "lab", self.api_url + "summary"]
        with httpx.Client(timeout=5.0, headers=self.auth) as client:
            while pending and time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"jupyter lab exited early:\n{self.log()[-4000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get(pending[0]).status_code == 200:
                        pending.pop(0)
                        continue
                time.sleep(0.1)
        if pending:
            raise TimeoutError(f"jupyter lab not ready in {timeout} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the server has not stopped in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


def start_lab(workdir: Path, *, codex_path: str, codex_home: Path) -> LabServer:
    """``python -m jupyter lab`` with the llmgw extension on a free loopback port."""
    port = free_port()
    token = secrets.token_hex(16)
    dirs = {
        name: workdir / name
        for name in ("root", "config", "data", "runtime", "settings", "workspaces", "llmgw")
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    for name, values in USER_SETTINGS.items():
        settings = dirs["settings"] / name
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(values))
    argv = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={dirs['root']}",
        f"--ServerApp.jpserver_extensions={EXTENSIONS}",
        f"--LLMGatewayApp.data_dir={dirs['llmgw']}",
        f"--LLMGatewayApp.codex_home={codex_home}",
        # The server never fetches news or looks for updates (loopback only).
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LLMGW_", "JUPYTER_", "JUPYTERLAB_"))
    }
    env.update(
        {
            "LLMGW_CODEX_PATH": codex_path,
            "JUPYTER_CONFIG_DIR": str(dirs["config"]),
            "JUPYTER_DATA_DIR": str(dirs["data"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
            "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
            "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
            "PYTHONUNBUFFERED": "1",
        }
    )
    log_path = workdir / f"jupyter-lab-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=dirs["root"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    server = LabServer(process, port, token, log_path)
    try:
        server.wait_ready()
    except BaseException:
        process.kill()
        process.wait(STOP_TIMEOUT)
        raise
    return server

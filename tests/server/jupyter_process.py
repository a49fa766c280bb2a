"""A real ``jupyter server`` subprocess with the llmgw extension, on a free loopback port.

Used by the end-to-end MCP tests and the benchmark: exactly what a user runs, with private
Jupyter config/data/runtime dirs so nothing of the machine's own Jupyter set-up leaks in.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# Only the extensions the tests need: faster start, nothing else on the port.
EXTENSIONS = (
    "{'jupyterlab': False, 'jupyter_lsp': False, 'notebook_shim': False, 'llmgw_jupyter': True}"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class JupyterServer:
    process: subprocess.Popen[bytes]
    port: int
    token: str
    data_dir: Path
    log_path: Path
    base_url: str = "/"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    @property
    def mcp_url(self) -> str:
        return self.url + "llmgw/mcp"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Ready = the llmgw REST API answers 200 (the extension's start hook has run)."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"jupyter server exited early:\n{self.log()[-4000:]}")
                with contextlib.suppress(httpx.TransportError):
                    resp = client.get(self.url + "llmgw/api/summary", headers=self.auth)
                    if resp.status_code == 200:
                        return
                time.sleep(0.05)
        raise TimeoutError(f"jupyter server not ready in {timeout} s:\n{self.log()[-4000:]}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the server and wait for it; SIGKILL if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
                raise
        return int(self.process.returncode)


def start_jupyter_server(
    workdir: Path,
    *,
    data_dir: Path,
    codex_path: str,
    codex_home: Path | None = None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
    wait: bool = True,
) -> JupyterServer:
    """Start ``python -m jupyter server`` with the llmgw extension; returns once it serves."""
    port = port or free_port()
    token = secrets.token_hex(16)
    root = workdir / "root"
    for sub in ("root", "jupyter-config", "jupyter-data", "jupyter-runtime"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "jupyter",
        "server",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--ServerApp.jpserver_extensions={EXTENSIONS}",
        f"--LLMGatewayApp.data_dir={data_dir}",
    ]
    if codex_home is not None:
        argv.append(f"--LLMGatewayApp.codex_home={codex_home}")
    argv += args or []
    full_env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LLMGW_", "JUPYTER_")) or key == "LLMGW_CODEX_PATH"
    }
    full_env.update(
        {
            "LLMGW_CODEX_PATH": codex_path,
            "JUPYTER_CONFIG_DIR": str(workdir / "jupyter-config"),
            "JUPYTER_DATA_DIR": str(workdir / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "jupyter-runtime"),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
    )
    log_path = workdir / f"jupyter-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, cwd=root, env=full_env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    server = JupyterServer(process, port, token, data_dir, log_path)
    if wait:
        try:
            server.wait_ready()
        except BaseException:
            server.stop(signal.SIGKILL)
            raise
    return server

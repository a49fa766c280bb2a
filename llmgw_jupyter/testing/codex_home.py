"""A private CODEX_HOME pointing Codex at a local mock, so tests and the demo never go online."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import tomli_w

__all__ = [
    "WITHOUT_CODEX_ENV",
    "codex_env",
    "codex_hidden",
    "find_codex_for_tests",
    "render_config",
    "write_codex_home",
]

# Set to 1 to run the tests as on a machine without Codex (the repo-local copy is ignored too).
WITHOUT_CODEX_ENV = "LLMGW_TEST_WITHOUT_CODEX"
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def render_config(
    base_url: str, model: str = "gpt-5.5", provider: str = "mock", extra_toml: str = ""
) -> str:
    """The config.toml text: every switch that would make Codex reach outside turned off."""
    config = {
        "model": model,
        "model_provider": provider,
        "check_for_update_on_startup": False,
        "analytics": {"enabled": False},
        "features": {"plugins": False, "unbounded_connection_retries": False},
        "model_providers": {
            provider: {
                "name": provider,
                "base_url": base_url,
                "wire_api": "responses",
                "request_max_retries": 0,
                "stream_max_retries": 0,
            }
        },
    }
    text = tomli_w.dumps(config)
    if extra_toml:
        text += "\n" + extra_toml.strip("\n") + "\n"
    return text


def write_codex_home(
    path: str | os.PathLike[str],
    base_url: str,
    model: str = "gpt-5.5",
    provider: str = "mock",
    extra_toml: str = "",
) -> Path:
    """Create ``path`` (if needed) with a config.toml for the mock; returns the CODEX_HOME dir.

    ``extra_toml`` is appended verbatim (e.g. an ``[mcp_servers.x]`` table).
    """
    home = Path(path)
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        render_config(base_url, model=model, provider=provider, extra_toml=extra_toml),
        encoding="utf-8",
    )
    return home


def codex_env(
    codex_home: str | os.PathLike[str], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A full environment for running codex on ``codex_home`` (starting from ``os.environ``).

    The mock provider has no ``env_key``, so no API key is needed. Loopback is added to
    NO_PROXY so a proxy in the environment cannot swallow requests to the mock.
    """
    env = dict(os.environ if base is None else base)
    env["CODEX_HOME"] = str(Path(codex_home))
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [h for h in env.get(name, "").split(",") if h.strip()]
        hosts += [h for h in _LOCAL_HOSTS if h not in hosts]
        env[name] = ",".join(hosts)
    return env


def _repo_codex() -> Path:
    # llmgw_jupyter/testing/codex_home.py -> <repo>
    return Path(__file__).resolve().parents[2] / ".codex-cli" / "node_modules" / ".bin" / "codex"


def codex_hidden() -> bool:
    """Whether tests run as on a machine without Codex (``$LLMGW_TEST_WITHOUT_CODEX`` set)."""
    return os.environ.get(WITHOUT_CODEX_ENV, "") not in ("", "0")


def find_codex_for_tests() -> str | None:
    """The codex CLI to test with: $LLMGW_CODEX_PATH, the repo-local npm install, then PATH.

    None when ``$LLMGW_TEST_WITHOUT_CODEX`` is set: the suite then shows which tests need Codex.
    """
    if codex_hidden():
        return None
    explicit = os.environ.get("LLMGW_CODEX_PATH")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    local = _repo_codex()
    if os.access(local, os.X_OK):
        return str(local)
    return shutil.which("codex")

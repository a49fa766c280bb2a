"""What a queued job runs: its command and environment, with its paths checked again at launch."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from llmgw_jupyter.errors import InvalidInputError
from llmgw_jupyter.paths import ensure_private_dir
from llmgw_jupyter.providers.base import Command, LaunchContext, Provider
from llmgw_jupyter.records import JobRecord
from llmgw_jupyter.runtime.config import RuntimeConfig
from llmgw_jupyter.runtime.executor import LaunchRequest
from llmgw_jupyter.runtime.isolation import INSIDE_HOME

# The job environment is an allow list: these, LC_*, what the provider names (its credentials)
# and ``env_passthrough``. Nothing else of the server's environment reaches a job.
JOB_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "USER",
        "LOGNAME",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "NO_PROXY",
        "no_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    }
)


def prepare_launch(
    record: JobRecord,
    provider: Provider,
    config: RuntimeConfig,
    *,
    data_dir: Path,
    job_dir: Path,
    isolated: bool,
) -> LaunchRequest:
    """The provider's command for ``record``; raises GatewayError (refused) or OSError."""
    ensure_private_dir(job_dir)
    check_paths_unchanged(record.args)
    context = LaunchContext(
        caller=record.caller,
        isolated=isolated,
        state_dir=ensure_private_dir(data_dir / "callers" / caller_slug(record.caller)),
    )
    command = provider.build_command(record.kind, record.args, job_dir, context)
    return LaunchRequest(
        job_id=record.id,
        job_dir=job_dir,
        argv=command.argv,
        cwd=command.cwd,
        env=job_env(command, config, isolated=isolated),
        stdin=command.stdin,
        isolated=isolated,
        mounts=command.mounts,
    )


def job_env(command: Command, config: RuntimeConfig, *, isolated: bool) -> dict[str, str]:
    """An allow list: no Jupyter, JupyterHub or gateway token reaches a job."""
    names = {*JOB_ENV_NAMES, *command.env_names, *config.env_passthrough}
    env = {
        name: value for name, value in os.environ.items() if name in names or name.startswith("LC_")
    }
    env.setdefault("PATH", os.defpath)
    if isolated:
        env["HOME"] = INSIDE_HOME
        env["TMPDIR"] = "/tmp"
    env.update(config.env)
    env.update(command.env)
    return {name: value for name, value in env.items() if value != ""}


def caller_slug(caller: str) -> str:
    """A caller key as one safe path component (``grant:bot`` -> ``grant-bot``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", caller)[:100].strip(".") or "caller"


def check_paths_unchanged(args: dict[str, Any]) -> None:
    """Paths were resolved (and policy-checked) at submission; a directory swapped for a symlink
    while the job waited must not move the job elsewhere."""
    for field_name, paths in (
        ("working_dir", [args["working_dir"]] if args.get("working_dir") else []),
        ("add_dirs", args.get("add_dirs", [])),
    ):
        for path in paths:
            if os.path.realpath(path) != path or not os.path.isdir(path):
                raise InvalidInputError(
                    field_name,
                    f"{path} changed since the job was submitted (it no longer resolves to the "
                    "same directory); the job was not started",
                )

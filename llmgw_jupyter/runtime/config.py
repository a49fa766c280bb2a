"""How the runtime is configured, and the providers it runs when none are given."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmgw_jupyter.providers.base import Provider


@dataclass
class RuntimeConfig:
    data_dir: Path | str | None = None
    max_running: int = 4
    provider_limits: dict[str, int] = field(default_factory=dict)
    max_queued: int = 64
    output_cap_bytes: int = 50 * 1024 * 1024
    wall_timeout_seconds: float = 3600.0
    idle_timeout_seconds: float = 900.0
    kill_grace_seconds: float = 3.0
    retention_seconds: float | None = 30 * 86400.0
    max_events_per_job: int = 5000
    codex_path: str | None = None
    codex_home: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # set in every job's environment
    providers: dict[str, Provider] | None = None  # replaces the built-in set (tests, new CLIs)
    # Isolation: "bwrap" runs jobs inside a bubblewrap boundary; "off" runs them as plain
    # children. Grants' jobs never run without the boundary (refused, fail closed); the owner's
    # run without it when ``isolate_owner`` is False.
    isolation: str = "bwrap"
    isolate_owner: bool = True
    bwrap_path: str | None = None
    protected_paths: list[str] = field(default_factory=list)  # hidden from jobs, besides defaults
    env_passthrough: list[str] = field(default_factory=list)  # more server variables jobs get
    codex_config_keys: list[str] | None = None  # widens the caller -c allow list
    max_active_per_grant: int = 8  # a grant's queued + running + awaiting jobs
    # Directories grants' jobs may work in (working_dir, add_dirs); None: anywhere not protected.
    # The server sets its root dir: a grant picking "/" would otherwise see the whole machine.
    grant_roots: list[str] | None = None
    owner_reserved_queue: int = 8  # queue places grants can never take



def builtin_providers(config: RuntimeConfig) -> dict[str, Provider]:
    from llmgw_jupyter.providers.codex import CodexProvider

    allowed = None
    if config.codex_config_keys is not None:
        from llmgw_jupyter.providers.codex import DEFAULT_ALLOWED_CONFIG_KEYS

        allowed = DEFAULT_ALLOWED_CONFIG_KEYS | frozenset(config.codex_config_keys)
    return {
        "codex": CodexProvider(
            config.codex_path, codex_home=config.codex_home, allowed_config_keys=allowed
        )
    }

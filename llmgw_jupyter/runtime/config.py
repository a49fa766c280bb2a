"""How the runtime is configured, and the providers it runs when none are given."""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field, replace
from pathlib import Path
from typing import Any

from llmgw_jupyter.providers.base import Provider, ProviderSettings


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
    env: dict[str, str] = field(default_factory=dict)  # set in every job's environment
    # Each provider's CLI path, home and options by name; a name that is not installed needs
    # its ``class_ref`` ("module:Class"). See providers/registry.py.
    provider_settings: dict[str, ProviderSettings] = field(default_factory=dict)
    providers: dict[str, Provider] | None = None  # instances: replace the registry (tests)
    # Isolation: "bwrap" runs jobs inside a bubblewrap boundary; "off" runs them as plain
    # children. Grants' jobs never run without the boundary (refused, fail closed); the owner's
    # run without it when ``isolate_owner`` is False.
    isolation: str = "bwrap"
    isolate_owner: bool = True
    bwrap_path: str | None = None
    protected_paths: list[str] = field(default_factory=list)  # hidden from jobs, besides defaults
    env_passthrough: list[str] = field(default_factory=list)  # more server variables jobs get
    max_active_per_grant: int = 8  # a grant's queued + running + awaiting jobs
    # Directories grants' jobs may work in (working_dir, add_dirs); None: anywhere not protected.
    # The server sets its root dir: a grant picking "/" would otherwise see the whole machine.
    grant_roots: list[str] | None = None
    owner_reserved_queue: int = 8  # queue places grants can never take
    # How jobs run: "local" (children of this process: they end with it) or "detached" (each
    # under its own supervisor process: they survive a server restart; runtime/detached.py).
    executor: str = "local"
    # executor "ray" (runtime/ray_executor.py): the cluster's dashboard / Jobs API URL, the
    # runtime environment every job gets (e.g. env_vars with credentials: never job arguments),
    # a file holding Ray's auth token, and whether the cluster's workers isolate jobs (without
    # it, jobs that need the isolation boundary, such as grants' jobs, are refused on Ray).
    ray_address: str | None = None
    ray_runtime_env: dict[str, Any] | None = None
    ray_auth_token_path: str | None = None
    ray_isolation_ok: bool = False
    # Transitional spellings of provider_settings["codex"] (path, home, options.config_keys):
    # accepted when building a config, never stored; callers move to provider_settings.
    codex_path: InitVar[str | None] = None
    codex_home: InitVar[str | None] = None
    codex_config_keys: InitVar[list[str] | None] = None

    def __post_init__(
        self, codex_path: str | None, codex_home: str | None, codex_config_keys: list[str] | None
    ) -> None:
        if codex_path is None and codex_home is None and codex_config_keys is None:
            return
        codex = self.provider_settings.get("codex", ProviderSettings())
        options = dict(codex.options)
        if codex_config_keys is not None:
            options["config_keys"] = list(codex_config_keys)
        self.provider_settings = {
            **self.provider_settings,
            "codex": replace(
                codex,
                path=codex_path if codex_path is not None else codex.path,
                home=codex_home if codex_home is not None else codex.home,
                options=options,
            ),
        }


def builtin_providers(config: RuntimeConfig) -> dict[str, Provider]:
    """The installed providers and the configured ones, each built from its own settings."""
    from llmgw_jupyter.providers.registry import build_providers

    return build_providers(config.provider_settings)

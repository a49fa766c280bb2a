"""``LLMGatewayApp``: the Jupyter server extension (name ``llmgw``).

One runtime per Jupyter server. Settings are built in ``initialize_settings`` (no event loop yet),
the store is opened and the MCP session manager entered in ``_start_jupyter_server_extension``
(the loop runs), and everything is closed in ``stop_extension``. Configure with
``c.LLMGatewayApp.<name>`` or ``--LLMGatewayApp.<name>=``; ``LLMGW_DATA_DIR``,
``LLMGW_CODEX_PATH`` and ``LLMGW_POLICY`` are the fallbacks of the matching traits.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Dict, Enum, Float, Int, List, TraitError, Unicode, default, validate

from llmgw_jupyter.paths import DATA_DIR_ENV, resolve_data_dir
from llmgw_jupyter.providers.base import ProviderConfigError, ProviderSettings
from llmgw_jupyter.providers.codex import CODEX_PATH_ENV
from llmgw_jupyter.providers.registry import provider_settings
from llmgw_jupyter.runtime import RuntimeConfig
from llmgw_jupyter.server import auth
from llmgw_jupyter.server.handlers import MCP_PATH, SERVICE_KEY, routes
from llmgw_jupyter.server.mcp_direct import DirectListener, start_direct_listener
from llmgw_jupyter.server.mcp_handler import quick_routes
from llmgw_jupyter.server.service import GatewayService, ServiceConfig, server_host

POLICY_ENV = "LLMGW_POLICY"
MB = 1024 * 1024


def _package_version() -> str:
    try:
        return version("llmgw-jupyter")
    except PackageNotFoundError:
        return ""


class LLMGatewayApp(ExtensionApp):
    """Durable Codex jobs, the owner's REST API and the MCP endpoint inside Jupyter Server."""

    name = "llmgw"
    description = __doc__ or ""
    load_other_extensions = True

    data_dir = Unicode(
        help=f"Store and job output directory (env {DATA_DIR_ENV}, else <jupyter data dir>/llmgw)."
    ).tag(config=True)
    providers = Dict(
        key_trait=Unicode(),
        value_trait=Dict(),
        default_value={},
        help="Coding-agent CLIs by name: {name: {'class': 'module:Class', 'path': CLI "
        "executable, 'home': its state dir, 'options': {...}, 'enabled': bool}}. 'class' may "
        "be left out for installed providers (entry points of the group "
        "llmgw_jupyter.providers, e.g. codex); every installed provider runs, with its "
        "defaults unless configured here, or not at all with 'enabled': False.",
    ).tag(config=True)
    codex_path = Unicode(
        None,
        allow_none=True,
        help=f"The Codex CLI executable (env {CODEX_PATH_ENV}, then PATH); the same as "
        "providers['codex']['path'], which wins when both are set.",
    ).tag(config=True)
    codex_home = Unicode(
        None,
        allow_none=True,
        help="CODEX_HOME for the Codex jobs (default: Codex's own); the same as "
        "providers['codex']['home'].",
    ).tag(config=True)
    owner_policy = Unicode(
        None,
        allow_none=True,
        help=f"Owner policy file (JSON), hot-reloaded; unset = allow everything (env {POLICY_ENV})."
        " A file that does not load at start refuses every tool call (fail closed).",
    ).tag(config=True)
    grant_policy_dir = Unicode(
        None,
        allow_none=True,
        help="Directory of grant policy files: <grant name>.json is that grant's policy, "
        "hot-reloaded, and wins over the policy stored with the grant.",
    ).tag(config=True)
    max_running = Int(4, help="Jobs running at once.").tag(config=True)
    provider_limits = Dict(
        value_trait=Int(), default_value={}, help="Per-provider running limits, e.g. {'codex': 2}."
    ).tag(config=True)
    max_queued = Int(64, help="Jobs waiting for a slot before submissions are refused.").tag(
        config=True
    )
    output_cap_mb = Float(50.0, help="Raw output kept per job, in MiB.").tag(config=True)
    wall_timeout_seconds = Float(3600.0, help="Longest run of one job.").tag(config=True)
    idle_timeout_seconds = Float(900.0, help="Longest silence of a running job.").tag(config=True)
    kill_grace_seconds = Float(3.0, help="SIGTERM to SIGKILL delay when stopping a job.").tag(
        config=True
    )
    retention_days = Float(
        30.0, help="Finished jobs older than this are deleted; 0 keeps them all."
    ).tag(config=True)
    mcp_enabled = Bool(True, help="Serve the MCP endpoint at {base_url}llmgw/mcp.").tag(config=True)
    allowed_hosts = List(
        Unicode(),
        help="Host headers accepted by the MCP endpoint besides loopback and the server's own "
        "address ('host:*' for any port; '*' turns the DNS-rebinding check off).",
    ).tag(config=True)
    allowed_origins = List(
        Unicode(),
        help="Origin headers accepted by the MCP endpoint besides loopback and the server's own.",
    ).tag(config=True)
    cancel_running_on_stop = Bool(
        False,
        help="On server stop, cancel running jobs; otherwise they end as 'interrupted' (output "
        "kept) and are reported so after the restart.",
    ).tag(config=True)
    executor = Enum(
        ["local", "detached", "ray"],
        "local",
        help="How jobs run. 'local': as children of this server (they end with it). 'detached': "
        "each under its own supervisor process: jobs survive a server stop, restart or culling "
        "and are followed again by the next server on the same data dir (unless "
        "cancel_running_on_stop). 'ray': each as a Ray job on the cluster at ray_address "
        "(pip install 'llmgw-jupyter[ray]'); they survive a server restart too.",
    ).tag(config=True)
    ray_address = Unicode(
        None,
        allow_none=True,
        help="executor 'ray': the cluster's dashboard / Jobs API URL (http://host:8265).",
    ).tag(config=True)
    ray_runtime_env = Dict(
        None,
        allow_none=True,
        help="executor 'ray': Ray runtime environment for every job (e.g. env_vars holding the "
        "CLI's credentials; never put them in job arguments).",
    ).tag(config=True)
    ray_auth_token_path = Unicode(
        None,
        allow_none=True,
        help="executor 'ray': a file holding the cluster's auth token (RAY_AUTH_MODE=token).",
    ).tag(config=True)
    ray_isolation_ok = Bool(
        False,
        help="executor 'ray': the cluster's workers isolate jobs, so jobs that need the "
        "isolation boundary (grants' jobs, and the owner's with isolate_owner_jobs) may run "
        "there. Without it they are refused on Ray, never run unisolated.",
    ).tag(config=True)
    kernel_env = Bool(
        True,
        help=f"Export {auth.SERVER_URL_ENV} and {auth.SERVER_TOKEN_ENV} (a per-server token valid "
        "only for the llmgw REST API) to kernels started by this server.",
    ).tag(config=True)
    heartbeat_seconds = Float(15.0, help="Comment line interval of the SSE stream.").tag(
        config=True
    )
    isolation = Unicode(
        "bwrap",
        help="'bwrap': every job runs inside a bubblewrap boundary that shows it only its "
        "working dir, add_dirs and what the CLI needs; 'off': no boundary (grants' jobs are then "
        "refused: they never run unisolated).",
    ).tag(config=True)
    isolate_owner_jobs = Bool(
        True, help="Run the owner's own jobs inside the boundary too (grants' always are)."
    ).tag(config=True)
    bwrap_path = Unicode(
        None, allow_none=True, help="The bubblewrap executable (env LLMGW_BWRAP_PATH, then PATH)."
    ).tag(config=True)
    protected_paths = List(
        Unicode(),
        help="More paths hidden from every job, besides the data dir, Jupyter's runtime, config "
        "and data dirs, the owner's Codex home and common credential files.",
    ).tag(config=True)
    job_env = List(
        Unicode(),
        help="Names of more server environment variables jobs receive (the job environment is an "
        "allow list: PATH, HOME, locale, proxy and CA settings, the CLI's credentials).",
    ).tag(config=True)
    codex_config_keys = List(
        Unicode(),
        help="Codex config keys callers may set with config_overrides, besides the built-in "
        "allow list (reasoning effort, summary, verbosity). Never add keys that change sandboxing, "
        "networking, credentials, endpoints, files, instructions or tools. The same as "
        "providers['codex']['options']['config_keys'].",
    ).tag(config=True)
    grant_roots = List(
        Unicode(),
        help="Directories grants' jobs may work in (working_dir and add_dirs must be inside one);"
        " empty: the Jupyter server's root dir. The owner's own jobs are not limited by this.",
    ).tag(config=True)
    max_active_jobs_per_grant = Int(
        8, help="Unfinished (awaiting, queued, running) jobs one grant may hold at once."
    ).tag(config=True)
    max_mcp_sessions_per_grant = Int(16, help="Open MCP sessions one grant may hold.").tag(
        config=True
    )
    max_mcp_grant_sessions = Int(
        256, help="Open MCP sessions all grants together may hold (the owner keeps its own room)."
    ).tag(config=True)
    max_mcp_body_bytes = Int(4 * MB, help="Largest MCP request body, in bytes.").tag(config=True)
    mcp_direct_port = Int(
        None,
        allow_none=True,
        help="Also serve the MCP endpoint at http://<mcp_direct_host>:<port>/mcp, outside "
        "Tornado (faster; same tokens, policy and sessions); 0 picks a free port (the log says "
        "which); None: off. Not under base_url, not behind a proxy: for agents on this machine.",
    ).tag(config=True)
    mcp_direct_host = Unicode(
        "127.0.0.1",
        help="The direct MCP listener's address: loopback only (127.0.0.1, ::1, localhost); any "
        "other value is refused at start (logged; the listener stays off).",
    ).tag(config=True)
    owner_reserved_queue = Int(
        8, help="Queue places that only the owner can use, so grants cannot starve the owner."
    ).tag(config=True)

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return str(resolve_data_dir(None))

    @default("codex_path")
    def _default_codex_path(self) -> str | None:
        return os.environ.get(CODEX_PATH_ENV) or None

    @validate("codex_home", "data_dir", "owner_policy", "grant_policy_dir")
    def _absolute_path(self, proposal: Any) -> str | None:
        """Jobs run in their own working dirs: a relative path would mean something else there."""
        value = proposal["value"]
        return str(Path(value).expanduser().resolve()) if value else value

    @validate("providers")
    def _check_providers(self, proposal: Any) -> dict[str, dict[str, Any]]:
        """Each entry's shape, and its class importable: a mistake names provider and setting."""
        value: dict[str, dict[str, Any]] = dict(proposal["value"])
        try:
            for name, entry in value.items():
                provider_settings(name, entry)
        except ProviderConfigError as error:
            raise TraitError(f"LLMGatewayApp.providers: {error}") from None
        return value

    @validate("isolation")
    def _check_isolation(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if value not in ("bwrap", "off"):
            raise TraitError(f"LLMGatewayApp.isolation must be 'bwrap' or 'off', got {value!r}")
        return value

    @default("owner_policy")
    def _default_owner_policy(self) -> str | None:
        return os.environ.get(POLICY_ENV) or None

    service: GatewayService | None = None
    mcp_direct: DirectListener | None = None
    _configured = False  # set once every setting was read and validated
    _configuration_error: str | None = None

    def _link_jupyter_server_extension(self, serverapp: Any) -> None:
        """Read the settings; a bad one is remembered, so the gateway refuses to start.

        Jupyter Server only logs a warning when linking fails and loads the extension anyway,
        with none of its settings (no owner policy, the default data dir): the gateway must
        fail closed instead."""
        try:
            super()._link_jupyter_server_extension(serverapp)
        except Exception as error:
            self._configuration_error = f"{type(error).__name__}: {error}"
            raise
        self._configured = True

    def initialize_settings(self) -> None:
        if not self._configured:
            reason = self._configuration_error or "its settings were not read"
            self.log.error(
                "llmgw: the gateway is NOT started: its configuration is invalid (%s). Fix the "
                "LLMGatewayApp setting named above and restart the server.",
                reason,
            )
            raise RuntimeError(f"llmgw: invalid configuration: {reason}")
        runtime = RuntimeConfig(
            data_dir=self.data_dir,
            max_running=self.max_running,
            provider_limits=dict(self.provider_limits),
            max_queued=self.max_queued,
            output_cap_bytes=int(self.output_cap_mb * MB),
            wall_timeout_seconds=self.wall_timeout_seconds,
            idle_timeout_seconds=self.idle_timeout_seconds,
            kill_grace_seconds=self.kill_grace_seconds,
            retention_seconds=self.retention_days * 86400.0 or None,
            provider_settings=self._provider_settings(),
            isolation=self.isolation,
            isolate_owner=self.isolate_owner_jobs,
            bwrap_path=self.bwrap_path,
            protected_paths=list(self.protected_paths),
            env_passthrough=list(self.job_env),
            max_active_per_grant=self.max_active_jobs_per_grant,
            grant_roots=list(self.grant_roots) or [self._server_root()],
            owner_reserved_queue=min(self.owner_reserved_queue, self.max_queued),
            executor=self.executor,
            ray_address=self.ray_address,
            ray_runtime_env=dict(self.ray_runtime_env) if self.ray_runtime_env else None,
            ray_auth_token_path=self.ray_auth_token_path,
            ray_isolation_ok=self.ray_isolation_ok,
        )
        config = ServiceConfig(
            runtime=runtime,
            owner_policy=self.owner_policy,
            grant_policy_dir=self.grant_policy_dir,
            mcp_enabled=self.mcp_enabled,
            allowed_hosts=list(self.allowed_hosts),
            allowed_origins=list(self.allowed_origins),
            cancel_running_on_stop=self.cancel_running_on_stop,
            export_kernel_env=self.kernel_env,
            heartbeat_seconds=self.heartbeat_seconds,
            max_mcp_sessions_per_grant=self.max_mcp_sessions_per_grant,
            max_mcp_grant_sessions=self.max_mcp_grant_sessions,
            max_mcp_body_bytes=self.max_mcp_body_bytes,
            version=_package_version(),
        )
        self.service = GatewayService(config, owner_token=self._owner_token)
        self.settings[SERVICE_KEY] = self.service

    def _provider_settings(self) -> dict[str, ProviderSettings]:
        """``providers``, with the codex_* traits filling what the codex entry leaves unset."""
        entries = {name: dict(entry) for name, entry in self.providers.items()}
        codex = entries.setdefault("codex", {})
        codex.setdefault("path", self.codex_path)
        codex.setdefault("home", self.codex_home)
        if self.codex_config_keys:
            options = dict(codex.get("options") or {})
            options.setdefault("config_keys", list(self.codex_config_keys))
            codex["options"] = options
        return {name: provider_settings(name, entry) for name, entry in entries.items()}

    def _server_root(self) -> str:
        root = getattr(self.serverapp, "root_dir", None)
        return str(Path(root).expanduser().resolve()) if root else os.getcwd()

    def _owner_token(self) -> str | None:
        provider = getattr(self.serverapp, "identity_provider", None)
        token = getattr(provider, "token", None)
        return token if isinstance(token, str) and token else None

    def initialize_handlers(self) -> None:
        assert self.service is not None
        self.handlers.extend(quick_routes(routes(self.service)))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        assert self.service is not None
        base_url = serverapp.base_url or "/"
        server_url = None
        own_hosts: list[str] = []
        if not getattr(serverapp, "sock", ""):
            host = server_host(serverapp.ip or "")
            server_url = f"http://{host}:{serverapp.port}{base_url}"
            own_hosts = [f"{host}:{serverapp.port}"]
            if serverapp.ip and serverapp.ip not in ("0.0.0.0", "::"):
                own_hosts.append(f"{serverapp.ip}:{serverapp.port}")
        await self.service.start(server_url=server_url, own_hosts=own_hosts)
        if self.service.state != "running":
            return
        self.log.info("llmgw: data in %s", self.service.runtime.data_dir)
        report = self.service.runtime.isolation_report()
        if "OFF" in report or "UNAVAILABLE" in report:
            self.log.warning("llmgw: %s", report)
        else:
            self.log.info("llmgw: %s", report)
        if self.service.mcp is not None and server_url:
            self.log.info("llmgw: MCP endpoint at %s%s", server_url, MCP_PATH)
        if self.service.policy_failed:
            self.log.error("llmgw: %s", self.service.policy_error)
        if self.mcp_direct_port is not None:
            self.mcp_direct = await start_direct_listener(
                self.service,
                self.mcp_direct_host,
                self.mcp_direct_port,
                serverapp.web_app.settings,
                self.log,
            )

    def current_activity(self) -> bool:
        """Running or queued jobs count as activity (``shutdown_no_activity_timeout``, culling)."""
        service = self.service
        if service is None or service.state != "running":
            return False
        counts = service.runtime.summary()
        return bool(counts.get("running") or counts.get("queued"))

    async def stop_extension(self) -> None:
        if self.service is not None:
            await self.service.stop()
        if self.mcp_direct is not None:  # after the service: its MCP streams have ended
            await self.mcp_direct.stop()
            self.mcp_direct = None

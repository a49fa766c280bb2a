"""One gateway per Jupyter server: runtime, gateway, MCP endpoint and their lifecycle.

Why a separate object: the ExtensionApp only turns traitlets into this; handlers read it from the
Tornado settings. Nothing here knows about traitlets, and nothing in the handlers starts or stops
anything.

States: ``starting`` (settings built, the loop not yet running: requests get 503), ``running``,
``failed`` (start raised: every request gets 503 with the reason), ``stopped``. A bad owner policy
file at start is not a failure of the whole service: the REST API stays up for the owner to read
jobs and the error, but no tool call runs (fail closed) and the MCP endpoint answers 503 with the
error until the file is fixed and the server restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from llmgw_jupyter.contract import ErrorBody, ErrorDetail
from llmgw_jupyter.errors import ErrorCategory, GatewayError, input_error_from_validation
from llmgw_jupyter.gateway import Gateway, ToolResult
from llmgw_jupyter.policy import Policy, PolicySource, load_policy
from llmgw_jupyter.runtime import Runtime, RuntimeConfig
from llmgw_jupyter.server import auth
from llmgw_jupyter.server.mcp_endpoint import (
    BODY_LIMIT,
    CALLER_SCOPE_KEY,
    LOCAL_HOSTS,
    LOCAL_ORIGINS,
    ASGIApp,
    MCPEndpoint,
    body_too_large,
    build_mcp_app,
    unauthenticated,
)
from llmgw_jupyter.store.grants import GrantRecord
from llmgw_jupyter.tools import Caller, ToolContext, ToolDefinition

log = logging.getLogger(__name__)

T = TypeVar("T")
UNAVAILABLE = ErrorCategory.UNAVAILABLE
DENY_ALL: dict[str, Any] = {"version": "1", "default": "deny", "hide": ["*"]}
MCP_INSTRUCTIONS = (
    "Run OpenAI Codex CLI requests as durable jobs on a Jupyter server. Start one with "
    "codex_request_async (or codex_request to wait), follow it with llm_job_watch and collect it "
    "with llm_job_result. Refusals start with [POLICY DENIED] and say why."
)
_WILDCARD_IPS = {"", "0.0.0.0", "::", "localhost", "127.0.0.1"}
SETTING_PREFIX = "c.LLMGatewayApp."  # how refusals tell the owner to change a limit


class FailedPolicySource(PolicySource):
    """Stands in for an owner policy file that did not load at start: refuses everything."""

    def __init__(self, path: str | Path, error: str) -> None:
        super().__init__(None)
        self.failed_path = Path(path)
        self.last_error = error
        self._deny = load_policy(DENY_ALL, f"<{path} failed to load: deny everything>")

    @property
    def policy(self) -> Policy:
        return self._deny


@dataclass
class ServiceConfig:
    runtime: RuntimeConfig
    owner_policy: str | None = None
    grant_policy_dir: str | None = None
    mcp_enabled: bool = True
    allowed_hosts: Sequence[str] = ()
    allowed_origins: Sequence[str] = ()
    cancel_running_on_stop: bool = False
    export_kernel_env: bool = True
    heartbeat_seconds: float = 15.0
    version: str = ""
    # MCP containment: sessions one grant may hold open, sessions all grants together may hold
    # (on top of the owner's own room), and the largest request body the endpoint reads.
    max_mcp_sessions_per_grant: int = 16
    max_mcp_grant_sessions: int = 256
    max_mcp_body_bytes: int = 4 * 1024 * 1024


class GatewayService:
    """Owns the runtime, the gateway and the MCP endpoint of one Jupyter server."""

    def __init__(
        self, config: ServiceConfig, owner_token: Callable[[], str | None] = lambda: None
    ) -> None:
        self.config = config
        self.state = "starting"
        self.failure: str | None = None
        self.runtime = Runtime(config.runtime)
        self.policy_path = config.owner_policy
        self.policy_failed = False
        self.gateway = Gateway(
            self.runtime,
            owner_policy=self._load_owner_policy(),
            grant_policy_dir=config.grant_policy_dir,
        )
        self.mcp: MCPEndpoint | None = None
        self.kernel_token = auth.new_kernel_token()
        self.server_url: str | None = None
        self.closing = asyncio.Event()
        self._owner_token = owner_token
        self._saved_env: dict[str, str | None] = {}
        # True once the gateway tells us of every revocation (REST, lab, the CLI elsewhere).
        self.hears_revocations = False
        # Grant callers by token hash for the MCP hot path; see ``auth.TokenCache``.
        self._grant_callers: auth.TokenCache[Caller] = auth.TokenCache(
            self.gateway.caller_for_token, self.gateway.grants_version
        )

    # -- owner policy ---------------------------------------------------------------------
    def _load_owner_policy(self) -> PolicySource:
        if not self.policy_path:
            return PolicySource(None)
        try:
            return PolicySource(self.policy_path)
        except Exception as error:  # missing, unreadable or invalid: fail closed
            self.policy_failed = True
            message = (
                f"the owner policy file {self.policy_path} did not load, so every tool call is "
                f"refused until it is fixed and the server restarted: {error}"
            )
            log.error("llmgw: %s", message)
            return FailedPolicySource(self.policy_path, message)

    @property
    def policy_error(self) -> str | None:
        return self.gateway.owner_policy.last_error

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, *, server_url: str | None, own_hosts: Sequence[str] = ()) -> None:
        """Open the store (recovering orphaned jobs), start the gateway and the MCP endpoint."""
        try:
            await self.runtime.start()
            await self.gateway.start()
            if self.config.mcp_enabled:
                self.mcp = self._build_mcp(own_hosts)
                if not self.policy_failed:
                    await self.mcp.start()
                self._listen_for_revocations()
        except Exception as error:
            self.state = "failed"
            self.failure = f"the llmgw gateway did not start: {error}"
            log.exception("llmgw: %s", self.failure)
            await self._close_parts()
            return
        self.server_url = server_url
        if server_url and self.config.export_kernel_env:
            self._export_kernel_env(server_url)
        self.state = "running"

    async def stop(self) -> None:
        """Streams end, in-flight MCP calls stop; jobs are cancelled or left to recovery."""
        if self.state == "stopped":
            return
        self.state = "stopped"
        self.closing.set()
        self._restore_env()
        await self._close_parts()

    async def _close_parts(self) -> None:
        if self.mcp is not None:
            await self.mcp.stop()
        await self.gateway.close()
        await self.runtime.close(cancel_running=self.config.cancel_running_on_stop)

    def require_running(self) -> None:
        if self.state == "running":
            return
        if self.state == "failed":
            raise GatewayError(UNAVAILABLE, self.failure or "the gateway failed to start")
        if self.state == "starting":
            raise GatewayError(UNAVAILABLE, "the llmgw gateway is still starting")
        raise GatewayError(UNAVAILABLE, "the llmgw gateway has stopped")

    def require_tools(self) -> None:
        """Tool calls additionally need a loaded owner policy (fail closed)."""
        self.require_running()
        if self.policy_failed:
            raise GatewayError(
                ErrorCategory.POLICY_ERROR, self.policy_error or "owner policy failed"
            )

    async def owner_read(self, tool: str, arguments: Mapping[str, Any]) -> ToolResult:
        """A read tool called by the owner through ``Gateway.call``, the one chokepoint: under
        the owner policy and audited like the same read over MCP (successful reads are
        collapsed there into one audit record per window).

        With an owner policy file that did not load, every call is refused (fail closed), yet
        the owner may still look at jobs: the same read tool then runs outside the policy, so
        the answer keeps its shape, and is not audited (nothing in the gateway was consulted).
        """
        self.require_running()
        if not self.policy_failed:
            return await self.gateway.call(tool, arguments, Caller.owner())
        definition: ToolDefinition = self.gateway.tools[tool]
        assert definition.annotations.read_only, f"{tool} is not a read"
        try:
            parsed = definition.input_model.model_validate(dict(arguments))
            context = ToolContext(
                self.runtime, Caller.owner(), light_arg_keys=self.gateway.tools.light_arg_keys
            )
            output = await definition.handler(context, parsed)
        except ValidationError as invalid:
            error = input_error_from_validation(invalid)
            return ToolResult.failure(error.category.value, error.message, field=error.field)
        except GatewayError as error:
            return ToolResult.failure(error.category.value, error.message, field=error.field)
        return ToolResult.success(output)

    async def until_closing(self, awaitable: Awaitable[T], *stops: asyncio.Event) -> T | None:
        """Await ``awaitable`` unless the service closes (or a ``stops`` event fires) first."""
        task = asyncio.ensure_future(awaitable)
        waiters = [asyncio.ensure_future(event.wait()) for event in (self.closing, *stops)]
        try:
            await asyncio.wait([task, *waiters], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None

    # -- kernels ----------------------------------------------------------------------------
    def _export_kernel_env(self, server_url: str) -> None:
        """Kernels inherit the server's environment: they find the REST API without set-up."""
        for name, value in (
            (auth.SERVER_URL_ENV, server_url),
            (auth.SERVER_TOKEN_ENV, self.kernel_token),
        ):
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    # -- authentication -----------------------------------------------------------------------
    def is_kernel_token(self, token: str | None) -> bool:
        return auth.same_token(token, self.kernel_token)

    def mcp_caller(self, authorization: str | None) -> Caller | None:
        """The owner (Jupyter's token) or a grant (its token); anything else is nobody."""
        token = auth.presented_token(authorization)
        if token is None:
            return None
        if auth.same_token(token, self._owner_token()):
            return Caller.owner()
        if self.state != "running":
            return None
        return self._grant_callers.caller(token)

    # -- grants -------------------------------------------------------------------------------
    def create_grant(self, name: str, policy: Mapping[str, Any] | None) -> tuple[GrantRecord, str]:
        """A new grant and its token (shown once); the token works on its first request."""
        created = self.gateway.create_grant(name, policy)
        self._grant_callers.clear()
        return created

    def revoke_grant(self, name: str) -> asyncio.Task[list[str]] | None:
        """Revoke ``name``: its token is refused from the very next request on (the cache is
        emptied before the store changes); see ``Gateway.revoke_grant`` for the rest."""
        self._grant_callers.clear()
        return self.gateway.revoke_grant(name)

    # -- revocation ---------------------------------------------------------------------------
    def _listen_for_revocations(self) -> None:
        add_listener = getattr(self.gateway, "add_revocation_listener", None)
        if callable(add_listener):
            add_listener(self.grant_revoked)
            self.hears_revocations = True

    async def grant_revoked(self, name: str) -> None:
        """Close every MCP session the revoked grant ``name`` holds: its streams end now."""
        self._grant_callers.clear()  # revoked elsewhere too (found by the gateway's watcher)
        if self.mcp is None:
            return
        key = Caller.grant(name).key
        closed = await self.mcp.close_sessions(key)
        if closed:
            log.info("llmgw: closed %d MCP session(s) of revoked %s", closed, key)

    # -- MCP ----------------------------------------------------------------------------------
    def _build_mcp(self, own_hosts: Sequence[str]) -> MCPEndpoint:
        hosts = [*LOCAL_HOSTS, *own_hosts, *self.config.allowed_hosts]
        origins = [*LOCAL_ORIGINS, *(f"http://{h}" for h in own_hosts)]
        origins += list(self.config.allowed_origins)
        protect = "*" not in hosts
        return build_mcp_app(
            self.gateway,
            allowed_hosts=_unique(hosts),
            allowed_origins=_unique(origins),
            dns_rebinding_protection=protect,
            caller_key=lambda caller: caller.key,
            # Tools that answer at once skip the SSE response without a progress token
            # (mcp_quick); <provider>_request and llm_job_watch wait, so they keep the SDK's
            # stream (and its keep-alive pings).
            quick_tools=self.gateway.tools.is_quick,
            version=self.config.version,
            instructions=MCP_INSTRUCTIONS,
            max_sessions_per_grant=self.config.max_mcp_sessions_per_grant,
            max_grant_sessions=self.config.max_mcp_grant_sessions,
            max_request_body_size=self.config.max_mcp_body_bytes,
            is_grant=lambda key: not Caller.from_key(key).is_owner,
            setting_of=lambda name: SETTING_PREFIX + name,
        )

    def _serving_mcp(self) -> MCPEndpoint | None:
        endpoint = self.mcp
        if endpoint is not None and endpoint.running and self.state == "running":
            return endpoint
        return None

    async def mcp_refusal(self, scope: Scope) -> ASGIApp | None:
        """The answer to an MCP request judged by its headers alone, or None to read its body."""
        endpoint = self._serving_mcp()
        if endpoint is not None:
            return await endpoint.refusal(scope)
        if CALLER_SCOPE_KEY not in scope:
            return unauthenticated()
        try:
            self.require_tools()
            refusal = GatewayError(UNAVAILABLE, "the MCP endpoint is not running")
        except GatewayError as error:
            refusal = error
        body = ErrorBody(error=ErrorDetail(category=refusal.category, message=refusal.message))
        return JSONResponse(body.model_dump(mode="json"), status_code=refusal.http_status)

    def mcp_body_too_large(self) -> ASGIApp:
        return body_too_large(self.config.max_mcp_body_bytes, SETTING_PREFIX + BODY_LIMIT)

    async def mcp_asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app behind ``{base_url}llmgw/mcp``: the SDK endpoint, or a clear refusal."""
        endpoint = self._serving_mcp()
        if endpoint is not None:
            await endpoint.asgi_app(scope, receive, send)
            return
        refusal = await self.mcp_refusal(scope)
        assert refusal is not None  # without a serving endpoint every request is refused
        await refusal(scope, receive, send)


def server_host(ip: str) -> str:
    """The host a local client uses to reach a server bound to ``ip``."""
    if ip in _WILDCARD_IPS:
        return "127.0.0.1"
    return f"[{ip}]" if ":" in ip and not ip.startswith("[") else ip


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))

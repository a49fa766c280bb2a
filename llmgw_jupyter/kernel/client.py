"""How a kernel reaches a gateway: the Jupyter server's REST API, or a runtime embedded in it.

Both clients do their I/O on a private event loop in a daemon thread. The kernel's own loop is
never blocked by them, and a cell can block on a job (``JobHandle.result()``) without nesting
event loops: the waiting happens on the private loop while the cell's thread sleeps.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import getpass
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    import httpx

    from llmgw_jupyter.gateway import Gateway
    from llmgw_jupyter.runtime import Runtime

log = logging.getLogger(__name__)

SERVER_URL_ENV = "LLMGW_SERVER_URL"
SERVER_TOKEN_ENV = "LLMGW_SERVER_TOKEN"
POLICY_ENV = "LLMGW_POLICY"
PROVIDERS_ENV = "LLMGW_PROVIDERS"  # embedded gateway: JSON like c.LLMGatewayApp.providers
API_PATH = "llmgw/api/"
MAX_WAIT_SECONDS = 30.0  # the REST long-poll's limit; waits longer than this are repeated
CONNECT_TIMEOUT = 5.0
MAX_SEQ = 2**31 - 1  # the largest sequence number a tool takes: no event comes after it
SESSION_PAGE = 500  # llm_session_list's largest page

T = TypeVar("T")
P = ParamSpec("P")
ClientKind = Literal["rest", "embedded"]


class GatewayCallError(Exception):
    """A refusal or failure reported by the gateway (policy denial, saturated, not found...)."""

    def __init__(
        self,
        category: str,
        message: str,
        *,
        field: str | None = None,
        status: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{category}: {message}")
        self.category = category
        self.message = message
        self.field = field
        self.status = status
        self.detail = dict(detail or {})


class _LoopThread:
    """A private asyncio loop in a daemon thread: work submitted here never waits on the kernel."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(_log_loop_exception)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def is_current(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.is_current:
            self._thread.join(timeout=5)


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Keep the private loop's complaints in the log: a thread must not write to cell output."""
    log.error("llmgw client loop: %s", context.get("message"), exc_info=context.get("exception"))


def on_own_loop(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Run a client coroutine on the client's private loop, whichever loop awaits it."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        self = args[0]
        assert isinstance(self, _BridgedClient)
        if self._loop_thread.is_current:
            return await method(*args, **kwargs)
        return await self.bridged(method(*args, **kwargs))

    return wrapper


class _BridgedClient:
    """What both clients share: the private loop and the two ways to wait on it."""

    kind: ClientKind
    description: str

    def __init__(self, thread_name: str) -> None:
        self._loop_thread = _LoopThread(thread_name)
        self._closed = False
        self._model: dict[str, Any] | None = None

    def blocking(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Wait in the calling thread; an interrupt (Ctrl-C) abandons the wait, not the work."""
        if self._loop_thread.is_current:
            coro.close()
            raise RuntimeError("blocking() called on the client's own loop")
        future = self._loop_thread.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    async def bridged(self, coro: Awaitable[T]) -> T:
        """Await from another loop (the kernel's) without blocking it."""

        async def run() -> T:
            return await coro

        future = self._loop_thread.submit(run())
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.blocking(self._aclose(), timeout=15)
        self._loop_thread.stop()

    async def _aclose(self) -> None:
        return None

    async def summary(self) -> dict[str, Any]:
        raise NotImplementedError

    async def model_info(self) -> dict[str, Any] | None:
        """``{"local_echo": bool, "label": str}`` from the summary (asked once); None when the
        gateway does not say (an older server) or cannot be asked."""
        if self._model is None:
            try:
                model = (await self.summary()).get("model")
            except GatewayCallError:
                return None
            if not (
                isinstance(model, dict)
                and isinstance(model.get("local_echo"), bool)
                and isinstance(model.get("label"), str)
            ):
                return None
            self._model = {"local_echo": model["local_echo"], "label": model["label"][:200]}
        return dict(self._model)


@runtime_checkable
class GatewayClient(Protocol):
    """The gateway as the notebook sees it; every coroutine may be awaited from any loop.

    Dicts are dumps of the ``llmgw_jupyter.contract`` models (``JobView``, ``EventView``,
    ``JobResultOutput``, ``Summary``, ``ApprovalView``...), the same from both clients: the
    embedded one calls the same tools through ``Gateway.call`` as the REST API does. Failures
    raise ``GatewayCallError`` (its ``category`` an ``ErrorCategory`` value, or a newer server's).
    """

    kind: ClientKind
    description: str

    def blocking(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T: ...

    async def bridged(self, coro: Awaitable[T]) -> T: ...

    async def summary(self) -> dict[str, Any]: ...

    async def model_info(self) -> dict[str, Any] | None: ...

    async def call_tool(self, tool: str, arguments: Mapping[str, Any]) -> dict[str, Any]: ...

    async def get_job(self, job_id: str) -> dict[str, Any]: ...

    async def list_jobs(
        self, *, status: str | None = None, limit: int = 20, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]: ...

    async def cancel_job(self, job_id: str) -> dict[str, Any]: ...

    async def wait_events(
        self, job_id: str, after: int, wait: float
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]: ...

    async def job_result(
        self, job_id: str, *, stream: str = "stdout", offset: int = 0, limit: int = 65536
    ) -> dict[str, Any]: ...

    async def sessions(self) -> list[dict[str, Any]]: ...

    async def approvals(self, status: str = "pending") -> list[dict[str, Any]]: ...

    async def decide_approval(self, approval_id: str, approve: bool) -> dict[str, Any]: ...

    async def create_grant(self, name: str, policy: Mapping[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


# -- REST ---------------------------------------------------------------------------------------
def api_base(server_url: str) -> str:
    """``LLMGW_SERVER_URL`` may be the server's base URL or already its ``llmgw/api/`` URL."""
    base = server_url if server_url.endswith("/") else server_url + "/"
    return base if base.endswith(API_PATH) else base + API_PATH


class RestClient(_BridgedClient):
    """The Jupyter server's gateway over its REST API: jobs outlive the kernel."""

    kind: ClientKind = "rest"

    def __init__(self, server_url: str, token: str | None) -> None:
        super().__init__("llmgw-rest-client")
        self.server_url = server_url
        self.api_url = api_base(server_url)
        self.token = token
        self.description = f"the Jupyter server's gateway at {server_url}"
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        """Created on the private loop, where it is always used."""
        if self._http is None:
            import httpx

            headers = {"Accept": "application/json"}
            if self.token:
                headers["Authorization"] = f"token {self.token}"
            self._http = httpx.AsyncClient(
                base_url=self.api_url,
                headers=headers,
                timeout=httpx.Timeout(30.0, connect=CONNECT_TIMEOUT),
                trust_env=False,  # loopback servers must not go through a proxy from the env
            )
        return self._http

    async def _aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        timeout: float | None = None,
    ) -> Any:
        import httpx

        clean = {k: v for k, v in (params or {}).items() if v is not None}
        kwargs: dict[str, Any] = {"params": clean}
        if json is not None:
            kwargs["json"] = json
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=CONNECT_TIMEOUT)
        try:
            response = await self._client().request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise GatewayCallError(
                "unreachable", f"the gateway at {self.server_url} did not answer: {error!r}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or (isinstance(body, dict) and body.get("is_error")):
            raise _rest_error(response.status_code, body, response.text)
        return body

    @on_own_loop
    async def summary(self) -> dict[str, Any]:
        return dict(await self._request("GET", "summary"))

    @on_own_loop
    async def call_tool(self, tool: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        body = await self._request("POST", f"tools/{tool}", json=dict(arguments))
        return dict(body.get("structured") or {})

    @on_own_loop
    async def get_job(self, job_id: str) -> dict[str, Any]:
        return dict(await self._request("GET", f"jobs/{job_id}"))

    @on_own_loop
    async def list_jobs(
        self, *, status: str | None = None, limit: int = 20, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        body = await self._request(
            "GET", "jobs", params={"status": status, "limit": limit, "offset": offset}
        )
        return list(body["jobs"]), int(body.get("total", len(body["jobs"])))

    @on_own_loop
    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        return dict(await self._request("POST", f"jobs/{job_id}/cancel", json={}))

    @on_own_loop
    async def wait_events(
        self, job_id: str, after: int, wait: float
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        wait = max(0.0, min(wait, MAX_WAIT_SECONDS))
        body = await self._request(
            "GET",
            f"jobs/{job_id}/events",
            params={"after": after, "wait": f"{wait:g}"},
            timeout=wait + 30.0,
        )
        return list(body["events"]), dict(body["job"])

    @on_own_loop
    async def job_result(
        self, job_id: str, *, stream: str = "stdout", offset: int = 0, limit: int = 65536
    ) -> dict[str, Any]:
        return dict(
            await self._request(
                "GET",
                f"jobs/{job_id}/result",
                params={"stream": stream, "offset": offset, "limit": limit},
            )
        )

    @on_own_loop
    async def sessions(self) -> list[dict[str, Any]]:
        return list((await self._request("GET", "sessions"))["sessions"])

    @on_own_loop
    async def approvals(self, status: str = "pending") -> list[dict[str, Any]]:
        return list(
            (await self._request("GET", "approvals", params={"status": status}))["approvals"]
        )

    @on_own_loop
    async def decide_approval(self, approval_id: str, approve: bool) -> dict[str, Any]:
        verb = "approve" if approve else "deny"
        return dict(await self._request("POST", f"approvals/{approval_id}/{verb}", json={}))

    @on_own_loop
    async def create_grant(self, name: str, policy: Mapping[str, Any]) -> dict[str, Any]:
        body = {"name": name, "policy": dict(policy)}
        return dict(await self._request("POST", "grants", json=body))


def _rest_error(status: int, body: Any, text: str) -> GatewayCallError:
    """A REST refusal: ``contract.ErrorBody``, or a failed ``contract.ToolCallAnswer`` (its
    ``structured`` kept as ``detail``); anything else (a proxy's page) by its status alone."""
    from llmgw_jupyter.errors import category_for_status

    fallback = category_for_status(status).value
    detail: dict[str, Any] = {}
    error: Any = None
    if isinstance(body, dict):
        structured = body.get("structured")
        if isinstance(structured, dict):
            detail = structured
        error = body.get("error") or detail.get("error")
        if error is None and body.get("is_error"):
            return GatewayCallError(fallback, str(body.get("text") or text), status=status)
    fields = _error_fields(error)
    if fields is None:
        return GatewayCallError(fallback, text.strip()[:500] or f"HTTP {status}", status=status)
    category, message, field = fields
    return GatewayCallError(
        category or fallback, message or text, field=field, status=status, detail=detail
    )


def _error_fields(error: Any) -> tuple[str | None, str, str | None] | None:
    """Category, message and field of a ``contract.ErrorDetail``; a category this client does
    not know (a newer server) is kept as it came."""
    from pydantic import ValidationError

    from llmgw_jupyter.contract import ErrorDetail

    if isinstance(error, str):
        return None, error, None
    if not isinstance(error, dict):
        return None
    try:
        detail = ErrorDetail.model_validate(error)
    except ValidationError:
        field = error.get("field")
        return (
            str(error.get("category") or "") or None,
            str(error.get("message") or ""),
            field if isinstance(field, str) else None,
        )
    return detail.category.value, detail.message, detail.field


# -- embedded -----------------------------------------------------------------------------------
class EmbeddedClient(_BridgedClient):
    """A runtime and gateway of the kernel's own, for kernels no gateway server looks after.

    It uses the same data dir layout as the server. When a running server holds the default
    data dir, it falls back to a per-user sibling dir (``fallback_reason`` says why).
    """

    kind: ClientKind = "embedded"

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__("llmgw-embedded-gateway")
        self.runtime: Runtime | None = None
        self.gateway: Gateway | None = None
        self.fallback_reason: str | None = None
        try:
            self.data_dir = self.blocking(self._start(data_dir), timeout=60)
        except BaseException:
            self._loop_thread.stop()
            raise
        where = f"data in {self.data_dir}"
        if self.fallback_reason:
            where += f"; {self.fallback_reason}"
        self.description = f"an embedded gateway in this process ({where})"
        atexit.register(self.close)

    async def _start(self, data_dir: str | os.PathLike[str] | None) -> Path:
        from llmgw_jupyter.errors import ErrorCategory, GatewayError
        from llmgw_jupyter.gateway import Gateway
        from llmgw_jupyter.paths import resolve_data_dir
        from llmgw_jupyter.policy import PolicySource
        from llmgw_jupyter.runtime import Runtime, RuntimeConfig

        primary = resolve_data_dir(data_dir)
        user = _user_name()
        candidates = [
            primary,
            primary.parent / f"{primary.name}-kernel-{user}",
            primary.parent / f"{primary.name}-kernel-{user}-{os.getpid()}",
        ]
        providers = _configured_providers()
        for index, candidate in enumerate(candidates):
            runtime = Runtime(RuntimeConfig(data_dir=candidate, provider_settings=providers))
            try:
                await runtime.start()
            except GatewayError as error:
                if error.category is not ErrorCategory.CONFLICT or index == len(candidates) - 1:
                    raise
                if index == 0:
                    self.fallback_reason = f"{primary} is in use by a running gateway server"
                continue
            _log_to_file(candidate / "kernel-gateway.log")
            policy = PolicySource(os.environ.get(POLICY_ENV) or None)
            gateway = Gateway(runtime, owner_policy=policy)
            try:
                await gateway.start()
            except BaseException:
                await runtime.close()
                raise
            self.runtime, self.gateway = runtime, gateway
            return candidate
        raise AssertionError("unreachable")

    async def _aclose(self) -> None:
        if self.gateway is not None:
            await self.gateway.close()
        if self.runtime is not None:
            await self.runtime.close()

    def _parts(self) -> tuple[Runtime, Gateway]:
        if self.runtime is None or self.gateway is None:
            raise GatewayCallError("unavailable", "the embedded gateway is not running")
        return self.runtime, self.gateway

    @on_own_loop
    async def summary(self) -> dict[str, Any]:
        from llmgw_jupyter.contract import ModelInfo, Summary
        from llmgw_jupyter.providers.codex import CodexProvider, describe_model

        runtime, gateway = self._parts()
        codex = runtime.providers.get("codex")
        model = (
            ModelInfo.model_validate(describe_model(codex.codex_home))
            if isinstance(codex, CodexProvider)
            else None
        )
        summary = Summary(
            counts=runtime.summary(),
            pending_approvals=len(gateway.approvals("pending")),
            mcp_url=None,
            policy_error=gateway.owner_policy.last_error,
            model=model,
        )
        return summary.model_dump(mode="json")

    @on_own_loop
    async def call_tool(self, tool: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Every call, reads included, passes ``Gateway.call`` as the owner: the answers are
        the tools' own (``contract``), the same as over REST and MCP."""
        from llmgw_jupyter.tools import Caller

        result = await self._parts()[1].call(tool, dict(arguments), Caller.owner())
        structured = dict(result.structured or {})
        if result.is_error:
            fields = _error_fields(structured.get("error"))
            category, message, field = fields or (None, result.text, None)
            raise GatewayCallError(
                category or result.error or "error",
                message or result.text,
                field=field,
                detail=structured,
            )
        return structured

    @on_own_loop
    async def get_job(self, job_id: str) -> dict[str, Any]:
        # llm_job_status with the full arguments and no events (none come after MAX_SEQ).
        arguments = {"job_id": job_id, "include_args": True, "after_seq": MAX_SEQ}
        return dict((await self.call_tool("llm_job_status", arguments))["job"])

    @on_own_loop
    async def list_jobs(
        self, *, status: str | None = None, limit: int = 20, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        arguments: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            arguments["status"] = status
        page = await self.call_tool("llm_job_list", arguments)
        return list(page["jobs"]), int(page["total"])

    @on_own_loop
    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        structured = await self.call_tool("llm_job_cancel", {"job_id": job_id})
        return dict(structured["job"])

    @on_own_loop
    async def wait_events(
        self, job_id: str, after: int, wait: float
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """As over REST: a wait is at most ``MAX_WAIT_SECONDS`` (the caller asks again)."""
        wait = max(0.0, min(wait, MAX_WAIT_SECONDS))
        if wait > 0:
            arguments = {"job_id": job_id, "after_seq": after, "timeout_seconds": wait}
            answer = await self.call_tool("llm_job_watch", arguments)
        else:
            answer = await self.call_tool("llm_job_status", {"job_id": job_id, "after_seq": after})
        return list(answer["events"]), dict(answer["job"])

    @on_own_loop
    async def job_result(
        self, job_id: str, *, stream: str = "stdout", offset: int = 0, limit: int = 65536
    ) -> dict[str, Any]:
        arguments = {"job_id": job_id, "stream": stream, "offset": offset, "limit": limit}
        return await self.call_tool("llm_job_result", arguments)

    @on_own_loop
    async def sessions(self) -> list[dict[str, Any]]:
        answer = await self.call_tool("llm_session_list", {"limit": SESSION_PAGE})
        return list(answer["sessions"])

    @on_own_loop
    async def approvals(self, status: str = "pending") -> list[dict[str, Any]]:
        wanted = None if status == "all" else status
        return [record.to_dict() for record in self._parts()[1].approvals(wanted)]

    @on_own_loop
    async def decide_approval(self, approval_id: str, approve: bool) -> dict[str, Any]:
        with _as_call_error():
            record = await self._parts()[1].decide_approval(approval_id, approve)
        return record.to_dict()

    @on_own_loop
    async def create_grant(self, name: str, policy: Mapping[str, Any]) -> dict[str, Any]:
        with _as_call_error():
            record, token = self._parts()[1].create_grant(name, policy)
        return {"name": record.name, "token": token}


@contextlib.contextmanager
def _as_call_error() -> Any:
    """Runtime and store errors look the same to the notebook as REST errors do."""
    from llmgw_jupyter.errors import GatewayError

    try:
        yield
    except GatewayError as error:
        raise GatewayCallError(error.category.value, error.message, field=error.field) from None
    except ValueError as error:  # e.g. a grant name or policy the store refuses
        raise GatewayCallError("invalid_input", str(error)) from None


def _user_name() -> str:
    try:
        name = getpass.getuser()
    except Exception:
        name = str(os.getuid())
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "user"


def _log_to_file(path: Path) -> None:
    """The embedded gateway logs to a file: its thread must never write into cell output."""
    package_log = logging.getLogger("llmgw_jupyter")
    if any(getattr(h, "_llmgw_kernel", False) for h in package_log.handlers):
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._llmgw_kernel = True  # type: ignore[attr-defined]
    package_log.addHandler(handler)


# -- choosing one ---------------------------------------------------------------------------
_lock = threading.Lock()
_client: GatewayClient | None = None


def connect(
    announce: Callable[[str], None] | None = print, *, refresh: bool = False
) -> GatewayClient:
    """The kernel's one client: REST when ``LLMGW_SERVER_URL`` answers, else embedded.

    The choice is announced once (through ``announce``) and kept for the kernel's life.
    """
    global _client
    with _lock:
        if _client is not None and not refresh:
            return _client
        if _client is not None:
            _client.close()
            _client = None
        client, message = _choose()
        _client = client
    if announce is not None:
        announce(message)
    return client


def current_client() -> GatewayClient | None:
    return _client


def set_client(client: GatewayClient | None) -> None:
    """Install a client (tests, or a user pointing the magics somewhere else)."""
    global _client
    with _lock:
        _client = client


def _choose() -> tuple[GatewayClient, str]:
    url = os.environ.get(SERVER_URL_ENV)
    why_not_rest = f"{SERVER_URL_ENV} is not set"
    if url:
        rest = RestClient(url, os.environ.get(SERVER_TOKEN_ENV))
        try:
            rest.blocking(rest.summary(), timeout=CONNECT_TIMEOUT + 5)
        except (GatewayCallError, concurrent.futures.TimeoutError) as error:
            rest.close()
            reason = error.message if isinstance(error, GatewayCallError) else "timed out"
            why_not_rest = f"the gateway server at {url} is not usable ({reason})"
        else:
            return rest, f"llmgw: using {rest.description}; jobs outlive this kernel."
    embedded = EmbeddedClient()
    return embedded, f"llmgw: {why_not_rest}; using {embedded.description}."


def _configured_providers() -> dict[str, Any]:
    """``LLMGW_PROVIDERS``: the embedded gateway's providers as JSON shaped like
    ``c.LLMGatewayApp.providers`` (e.g. ``{"claude": {"path": "/opt/claude"}}``); a bad value is
    an error naming the variable, never ignored."""
    from llmgw_jupyter.errors import ErrorCategory, GatewayError
    from llmgw_jupyter.providers.base import ProviderConfigError
    from llmgw_jupyter.providers.registry import settings_from_config

    raw = os.environ.get(PROVIDERS_ENV)
    if not raw:
        return {}
    try:
        return settings_from_config(json.loads(raw))
    except (ValueError, ProviderConfigError) as error:
        raise GatewayError(
            ErrorCategory.INVALID_INPUT, f"{PROVIDERS_ENV}: {error}", field=PROVIDERS_ENV
        ) from None

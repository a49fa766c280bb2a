"""REST API (owner only) and the MCP route, as thin Tornado handlers over ``GatewayService``.

Every REST verb carries ``@web.authenticated`` and ``@authorized`` (resource ``llmgw``); Jupyter's
auth and XSRF rules apply, except that the per-server kernel token (``Authorization: token
<kernel token>``) is accepted here, and only here, as the owner. Handlers parse, call the gateway
and render the wire models of ``llmgw_jupyter.contract``. Tool calls and the job reads (job, jobs
list, events, result, sessions) all pass ``Gateway.call``, the one chokepoint, so they are under
the owner policy and audited like the same calls over MCP. Every refusal is a ``GatewayError``
rendered by the one ``write_error`` as ``contract.ErrorBody`` with the status of its category.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import math
import sqlite3
from typing import Any

from jupyter_server._tz import utcnow
from jupyter_server.auth import User
from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.call_context import CallContext
from jupyter_server.base.handlers import APIHandler
from pydantic import BaseModel
from tornado import web
from tornado.iostream import StreamClosedError

from llmgw_jupyter import contract
from llmgw_jupyter.errors import ErrorCategory, GatewayError, category_for_status, category_of
from llmgw_jupyter.gateway import ToolResult
from llmgw_jupyter.providers.codex import CodexProvider, describe_model
from llmgw_jupyter.records import ACTIVE_STATUS_VALUES, JobRecord
from llmgw_jupyter.server import auth
from llmgw_jupyter.server.asgi_bridge import ASGIHandler
from llmgw_jupyter.server.mcp_endpoint import CALLER_SCOPE_KEY, PRECHECKED_SCOPE_KEY
from llmgw_jupyter.server.service import GatewayService
from llmgw_jupyter.tools import Caller

SERVICE_KEY = "llmgw_service"
ACTIVITY_KEY = "llmgw_last_activity"  # Jupyter counts every "*_last_activity" setting
AUTH_RESOURCE = "llmgw"
KERNEL_USER = "llmgw-kernel"
API = "llmgw/api"
MCP_PATH = "llmgw/mcp"
MAX_WAIT_SECONDS = 30.0
# Every offset and sequence number in a query stays within 31 bits, the bound of the tool
# schemas too: far beyond any output page, event count or job list the gateway keeps, and safe
# for SQLite, for seeking on any filesystem (ext4 refuses a seek to 2**62 with EINVAL) and for
# JavaScript numbers.
MAX_QUERY_INT = 2**31 - 1
# What llm_job_list takes: a REST jobs query beyond it (a caller filter, several states, a
# longer page) is answered by the runtime directly until the tool takes those too.
INVALID = ErrorCategory.INVALID_INPUT
DISK_FULL_MESSAGE = "the gateway's disk is full (its data dir or store): nothing was saved"
INTERNAL_MESSAGE = "internal error in the llmgw REST API"


class _AllowKernel:
    """The kernel token stands for the owner: an authorizer that allows the owner everything."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return True


class LLMGatewayHandler(APIHandler):
    """Base of the REST handlers: kernel-token auth, JSON errors, argument parsing."""

    auth_resource = AUTH_RESOURCE
    _kernel_authenticated = False

    @property
    def service(self) -> GatewayService:
        service: GatewayService = self.settings[SERVICE_KEY]
        return service

    @property
    def authorizer(self) -> Any:
        if self._kernel_authenticated:
            return _AllowKernel()
        return super().authorizer

    async def prepare(self) -> None:  # type: ignore[override]
        token = auth.presented_token(self.request.headers.get("Authorization"))
        if token is not None and self.service.is_kernel_token(token):
            self._accept_kernel_token()
            return
        await super().prepare()

    def _accept_kernel_token(self) -> None:
        """Jupyter's identity provider does not know this token: authenticate it here."""
        CallContext.set(CallContext.JUPYTER_HANDLER, self)
        if not self.check_host():
            raise web.HTTPError(403)
        user = User(username=KERNEL_USER, name="kernel of this Jupyter server")
        self.current_user = self._jupyter_current_user = user
        self._token_authenticated = True  # a header token: no XSRF cookie needed
        self._kernel_authenticated = True

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The one REST error shape (``contract.ErrorBody``), whatever refused or failed."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, GatewayError):
            refusal = error
        elif isinstance(error, web.HTTPError):  # Jupyter's and Tornado's own refusals
            message = error.log_message or error.reason or self._reason
            refusal = GatewayError(category_for_status(status_code), message)
        elif is_disk_full(error):
            refusal = GatewayError(ErrorCategory.DISK_FULL, DISK_FULL_MESSAGE)
        else:
            refusal = GatewayError(ErrorCategory.INTERNAL, INTERNAL_MESSAGE)
        if not isinstance(error, web.HTTPError):
            status_code = refusal.http_status
        if refusal.retry_after_seconds is not None:
            self.set_header("Retry-After", str(max(1, math.ceil(refusal.retry_after_seconds))))
        self.set_status(status_code)
        if status_code >= 500:
            self.log.warning(
                "llmgw %s %s: %s", self.request.method, self.request.path, refusal.message
            )
        self.finish(json.dumps(_error_body(refusal)))

    # -- helpers ------------------------------------------------------------------------------
    def running_service(self) -> GatewayService:
        """The service, once it runs; a 503 ``unavailable`` while it starts or after it stops."""
        self.service.require_running()
        return self.service

    def json_body(self) -> dict[str, Any]:
        raw = self.request.body or b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise GatewayError(INVALID, f"body: not valid JSON ({error})", field="body") from None
        if not isinstance(body, dict):
            raise GatewayError(INVALID, "body: must be a JSON object", field="body")
        return body

    def int_arg(self, name: str, default: int, low: int, high: int) -> int:
        return int(self._number_arg(name, default, low, high, int, "an integer"))

    def float_arg(self, name: str, default: float, low: float, high: float) -> float:
        return self._number_arg(name, default, low, high, float, "a number")

    def _number_arg(
        self,
        name: str,
        default: float,
        low: float,
        high: float,
        parse: type[int] | type[float],
        kind: str,
    ) -> float:
        """A query number within bounds, or a 400 that names the argument and the rule."""
        value = self.get_query_argument(name, None)
        if value is None or value == "":
            return default
        shown = (str(low), str(high)) if parse is int else (f"{low:g}", f"{high:g}")
        rule = GatewayError(
            INVALID, f"{name}: must be {kind} between {shown[0]} and {shown[1]}", field=name
        )
        if len(value) > 32:  # no number in range is this long; int() of 4300 digits is slow
            raise rule
        try:
            number = parse(value)
        except ValueError:
            raise rule from None
        if not (math.isfinite(number) and low <= number <= high):
            raise rule
        return number

    def str_arg(self, name: str) -> str | None:
        value = self.get_query_argument(name, None)
        return value or None

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))

    def send_model(self, model: type[BaseModel], data: Any, status: int = 200) -> None:
        """Send ``data`` shaped as ``model``: only its fields, checked on the way out."""
        self.send(model.model_validate(data).model_dump(mode="json"), status)

    def send_answer(self, model: type[BaseModel], answer: dict[str, Any]) -> None:
        """Send a tool's answer (already its contract model's dump) as ``model``: only the
        fields ``model`` names, not checked a second time."""
        self.send({name: answer[name] for name in model.model_fields})

    def job(self, job_id: str) -> JobRecord:
        record = self.running_service().runtime.get(job_id)
        if record is None:
            raise GatewayError(ErrorCategory.NOT_FOUND, f"job {job_id} not found", field="job_id")
        return record

    async def call_tool(self, tool: str, arguments: dict[str, Any]) -> ToolResult:
        service = self.running_service()
        service.require_tools()
        return await service.gateway.call(tool, arguments, Caller.owner())

    async def read(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """A read tool's answer through the one chokepoint, or its refusal raised."""
        result = await self.running_service().owner_read(tool, arguments)
        if result.is_error:
            raise refusal_of(result)
        return result.structured

    def send_tool_result(self, result: ToolResult) -> None:
        """Tool results keep their shape; a failure also carries the common ``error`` object."""
        answer = contract.ToolCallAnswer(
            is_error=result.is_error, text=result.text, structured=result.structured
        )
        status = 200
        if result.is_error:
            refusal = refusal_of(result)
            answer.error = contract.ErrorDetail(
                category=refusal.category, message=refusal.message, field=refusal.field
            )
            status = refusal.http_status
            if refusal.retry_after_seconds is not None and status == 429:
                retry = max(1, math.ceil(refusal.retry_after_seconds))
                self.set_header("Retry-After", str(retry))
        self.send(answer.model_dump(mode="json", exclude_none=not result.is_error), status)


def _error_body(error: GatewayError) -> dict[str, Any]:
    detail = contract.ErrorDetail(category=error.category, message=error.message, field=error.field)
    return contract.ErrorBody(error=detail).model_dump(mode="json")


_SQLITE_FULL = 13  # SQLite's result code "database or disk is full"


def is_disk_full(error: BaseException | None) -> bool:
    """SQLite's "database or disk is full" or an OSError ENOSPC/EDQUOT, however it escaped:
    also as the cause or context of another error (a failed ROLLBACK after SQLITE_FULL)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, sqlite3.OperationalError):
            code = getattr(error, "sqlite_errorcode", None)
            if code == _SQLITE_FULL or "disk is full" in str(error):
                return True
        elif isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False


def refusal_of(result: ToolResult) -> GatewayError:
    """A failed tool result as the error it reports (category, message, field, retry time)."""
    structured = result.structured or {}
    error = structured.get("error") or {}
    retry = structured.get("retry_after_seconds")
    return GatewayError(
        category_of(result.error or error.get("category")) or ErrorCategory.INTERNAL,
        str(error.get("message") or result.text),
        field=error.get("field"),
        retry_after_seconds=float(retry) if isinstance(retry, int | float) and retry else None,
    )


# -- REST ---------------------------------------------------------------------------------------
class SummaryHandler(LLMGatewayHandler):
    _track_activity = False  # a status bar polls this: it must not keep an idle server alive

    @web.authenticated
    @authorized
    async def get(self) -> None:
        service = self.running_service()
        mcp_url = None
        if service.mcp is not None:
            base = self.settings.get("base_url", "/")
            mcp_url = f"{self.request.protocol}://{self.request.host}{base}{MCP_PATH}"
        summary = contract.Summary(
            counts=service.runtime.summary(),
            pending_approvals=service.gateway.pending_approval_count(),
            mcp_url=mcp_url,
            policy_error=service.policy_error,
            model=_model_of(service),
            usage=contract.UsageTotals.model_validate(service.runtime.usage_totals()),
        )
        self.send(summary.model_dump(mode="json"))


def _model_of(service: GatewayService) -> contract.ModelInfo:
    """What the status bar says about the model: the bundled local echo model or another one."""
    provider = service.runtime.providers.get("codex")
    if not isinstance(provider, CodexProvider):
        return contract.ModelInfo(local_echo=False, label="")
    return contract.ModelInfo.model_validate(describe_model(provider.codex_home))


class ToolHandler(LLMGatewayHandler):
    @web.authenticated
    @authorized
    async def post(self, tool: str) -> None:
        self.send_tool_result(await self.call_tool(tool, self.json_body()))


class JobsHandler(LLMGatewayHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        statuses = [s for s in (self.get_query_argument("status", "") or "").split(",") if s]
        provider, caller = self.str_arg("provider"), self.str_arg("caller")
        limit = self.int_arg("limit", 50, 1, 500)
        offset = self.int_arg("offset", 0, 0, MAX_QUERY_INT)
        arguments: dict[str, Any] = {"limit": limit, "offset": offset}
        if len(statuses) == 1:
            arguments["status"] = statuses[0]
        elif statuses:
            arguments["statuses"] = statuses
        if provider is not None:
            arguments["provider"] = provider
        if caller is not None:
            arguments["caller"] = caller
        self.send_answer(contract.JobsPage, await self.read("llm_job_list", arguments))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.send_tool_result(await self.call_tool("codex_request_async", self.json_body()))


class JobHandler(LLMGatewayHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        # llm_job_status with its full arguments, and no events (none come after MAX_QUERY_INT).
        arguments = {"job_id": job_id, "include_args": True, "after_seq": MAX_QUERY_INT}
        self.send_answer(contract.JobView, (await self.read("llm_job_status", arguments))["job"])


class JobCancelHandler(LLMGatewayHandler):
    @web.authenticated
    @authorized
    async def post(self, job_id: str) -> None:
        result = await self.call_tool("llm_job_cancel", {"job_id": job_id})
        if result.is_error:
            raise refusal_of(result)
        self.send_answer(contract.JobView, result.structured["job"])


class JobEventsHandler(LLMGatewayHandler):
    """Events after a sequence number; ``wait`` long-polls until one arrives or the job ends."""

    def initialize(self) -> None:
        self._gone = asyncio.Event()

    def on_connection_close(self) -> None:
        self._gone.set()

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        service = self.running_service()
        after = self.int_arg("after", 0, 0, MAX_QUERY_INT)
        wait = self.float_arg("wait", 0.0, 0.0, MAX_WAIT_SECONDS)
        limit = self.int_arg("limit", 200, 1, 1000)
        if wait <= 0:
            status = {"job_id": job_id, "after_seq": after, "limit": limit}
            self.send_answer(contract.JobEventsPage, await self.read("llm_job_status", status))
            return
        # llm_job_watch answers at once when there are events or the job is over, else at the
        # first event, the job's end or the timeout (its pages hold up to 200 events).
        watch = {"job_id": job_id, "after_seq": after, "timeout_seconds": wait}
        waited = await service.until_closing(self.read("llm_job_watch", watch), self._gone)
        if self._gone.is_set():
            return
        if waited is None:  # the server is stopping: what there is now
            status = {"job_id": job_id, "after_seq": after, "limit": limit}
            waited = await self.read("llm_job_status", status)
        self.send_answer(contract.JobEventsPage, {**waited, "events": waited["events"][:limit]})


class JobResultHandler(LLMGatewayHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        arguments = {
            "job_id": job_id,
            "stream": self.get_query_argument("stream", "stdout"),
            "offset": self.int_arg("offset", 0, 0, MAX_QUERY_INT),
            "limit": self.int_arg("limit", 65536, 0, 1024 * 1024),
        }
        # The same answer as llm_job_result over MCP, ``done`` and ``error`` included.
        self.send_answer(contract.JobResultOutput, await self.read("llm_job_result", arguments))


class StreamHandler(LLMGatewayHandler):
    """Server-Sent Events: ``job`` (JobView) on every change, ``event`` for each job event.

    Woken by ``runtime.subscribe()``, never by polling. ``job=<id>`` limits the stream to one job
    and replays its events after ``after``; without it, events of jobs that were already running
    start at their current sequence number and new jobs from their first event.
    """

    _track_activity = False

    def initialize(self) -> None:
        self._gone = asyncio.Event()

    def on_connection_close(self) -> None:
        self._gone.set()

    @web.authenticated
    @authorized
    async def get(self) -> None:
        service = self.running_service()
        runtime = service.runtime
        only = self.str_arg("job")
        after = self.int_arg("after", 0, 0, MAX_QUERY_INT)
        subscription = runtime.subscribe()
        try:
            known: dict[str, int] = {}
            if only is not None:
                self.job(only)
                known[only] = after
            else:
                active = sorted(ACTIVE_STATUS_VALUES)
                jobs, _ = runtime.list_jobs(status=active, limit=500)
                known.update({job.id: job.last_seq for job in jobs})
            self.set_header("Content-Type", "text/event-stream; charset=utf-8")
            self.set_header("Cache-Control", "no-cache")
            self.set_header("X-Accel-Buffering", "no")
            self.write(": connected\n\n")
            if only is not None:
                self._write_job(only, known)
            if not await self._flush():
                return
            await self._pump(service, subscription, only, known)
        finally:
            subscription.close()
        if not self._gone.is_set():
            with contextlib.suppress(StreamClosedError):
                self.finish(set_content_type="text/event-stream; charset=utf-8")

    async def _pump(
        self, service: GatewayService, subscription: Any, only: str | None, known: dict[str, int]
    ) -> None:
        heartbeat = service.config.heartbeat_seconds
        stops = [asyncio.ensure_future(e.wait()) for e in (service.closing, self._gone)]
        change_task: asyncio.Future[Any] | None = None
        try:
            while True:
                if change_task is None:
                    change_task = asyncio.ensure_future(subscription.get())
                done, _ = await asyncio.wait(
                    [change_task, *stops], timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED
                )
                if any(stop in done for stop in stops):
                    return
                if change_task not in done:
                    self.write(": heartbeat\n\n")
                else:
                    change, change_task = change_task.result(), None
                    if change.is_resync:
                        self._resync(only, known)
                    elif only is None or change.job_id == only:
                        self._write_job(change.job_id, known)
                if not await self._flush():
                    return
        finally:
            for task in (*stops, change_task):
                if task is not None:
                    task.cancel()

    def _resync(self, only: str | None, known: dict[str, int]) -> None:
        """This stream fell behind and lost changes: re-send what it may have missed.

        One job: that job and its events after the last one sent. All jobs: ``event: resync``
        first (the client reloads its list), then every active job and every job seen before
        (it may have ended meanwhile), each with the events the stream had not sent yet."""
        if only is not None:
            self._write_job(only, known)
            return
        self.write(_sse("resync", {}))
        jobs, _ = self.service.runtime.list_jobs(status=sorted(ACTIVE_STATUS_VALUES), limit=500)
        for job_id in dict.fromkeys([*known, *(job.id for job in jobs)]):
            self._write_job(job_id, known)

    def _write_job(self, job_id: str, known: dict[str, int]) -> None:
        runtime = self.service.runtime
        record = runtime.get(job_id)
        if record is None:
            return
        self.write(_sse("job", record.to_dict(include_args=False)))
        seen = known.get(job_id, 0)
        while seen < record.last_seq:
            events = runtime.events(job_id, seen, 1000)
            if not events:
                break
            for event in events:
                self.write(_sse("event", event.to_dict()))
            seen = events[-1].seq
        known[job_id] = seen

    async def _flush(self) -> bool:
        if self._gone.is_set():
            return False
        try:
            await self.flush()
        except StreamClosedError:
            self._gone.set()
            return False
        return True


SESSION_PAGE = 500  # llm_session_list's largest page


def _sse(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class SessionsHandler(LLMGatewayHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        answer = await self.read("llm_session_list", {"limit": SESSION_PAGE})
        self.send_answer(contract.SessionListOutput, answer)


class ApprovalsHandler(LLMGatewayHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        status = self.get_query_argument("status", "pending")
        if status not in ("pending", "approved", "denied", "expired", "all"):
            rule = "must be pending, approved, denied, expired or all"
            raise GatewayError(INVALID, f"status: {rule}", field="status")
        limit = self.int_arg("limit", 100, 1, 1000)
        gateway = self.running_service().gateway
        records = gateway.approvals(None if status == "all" else status, limit)
        self.send_model(contract.ApprovalsPage, {"approvals": [r.to_dict() for r in records]})


class ApprovalDecisionHandler(LLMGatewayHandler):
    @web.authenticated
    @authorized
    async def post(self, approval_id: str, decision: str) -> None:
        service = self.running_service()
        reason = self.json_body().get("reason")
        if reason is not None and not isinstance(reason, str):
            raise GatewayError(INVALID, "reason: must be a string", field="reason")
        try:
            record = await service.gateway.decide_approval(
                approval_id, decision == "approve", decided_by="owner", reason=reason
            )
        except GatewayError as error:
            error.field = "approval_id"
            raise
        self.send_model(contract.ApprovalView, record.to_dict())


class GrantsHandler(LLMGatewayHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        grants = self.running_service().gateway.grants()
        self.send_model(contract.GrantsPage, {"grants": [grant.to_dict() for grant in grants]})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        service = self.running_service()
        body = self.json_body()
        name, policy = body.get("name"), body.get("policy")
        if not isinstance(name, str):
            raise GatewayError(INVALID, "name: required, a string", field="name")
        if not isinstance(policy, dict):
            raise GatewayError(INVALID, "policy: required, a policy object", field="policy")
        unknown = sorted(set(body) - {"name", "policy"})
        if unknown:
            raise GatewayError(INVALID, f"{unknown[0]}: unknown field", field=unknown[0])
        grant, token = service.create_grant(name, policy)
        created = {"name": grant.name, "token": token, "grant": grant.to_dict()}
        self.send_model(contract.GrantCreated, created, 201)


class GrantHandler(LLMGatewayHandler):
    @web.authenticated
    @authorized
    async def delete(self, name: str) -> None:
        service = self.running_service()
        enforcing = service.revoke_grant(name)
        if isinstance(enforcing, asyncio.Future):  # jobs, approvals, MCP sessions: done on return
            await enforcing
        if not service.hears_revocations:  # the gateway does not tell us: close them here
            await service.grant_revoked(name)
        grant = service.gateway.grant(name)
        if grant is None:  # gone from the store meanwhile (another process): say which one
            self.send({"name": name})
            return
        self.send_model(contract.GrantView, grant.to_dict())


class AuditHandler(LLMGatewayHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        records = self.running_service().gateway.audit(
            caller=self.str_arg("caller"),
            tool=self.str_arg("tool"),
            decision=self.str_arg("decision"),
            limit=self.int_arg("limit", 100, 1, 1000),
            offset=self.int_arg("offset", 0, 0, MAX_QUERY_INT),
        )
        self.send_model(contract.AuditPage, {"records": [r.to_dict() for r in records]})


class PolicyHandler(LLMGatewayHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        service = self.running_service()
        source = service.gateway.owner_policy
        owner = {
            "path": service.policy_path,
            "loaded": not service.policy_failed,
            "generation": source.generation,
            "policy": source.policy.to_dict(),
        }
        self.send_model(contract.PolicyState, {"owner": owner, "last_error": source.last_error})


# -- MCP ----------------------------------------------------------------------------------------
@web.stream_request_body
class MCPHandler(ASGIHandler):
    """``{base_url}llmgw/mcp``: bearer-token auth here, then the SDK through the bridge.

    A lean handler on purpose: a plain ``tornado.web.RequestHandler`` (through ``ASGIHandler``),
    not Jupyter's ``JupyterHandler``/``APIHandler``, so an MCP request pays for none of Jupyter's
    browser-session machinery (identity provider, login cookie refresh, XSRF, CSP, user model).
    What it does per request: the bearer token (the Jupyter server's token is the owner, a grant
    token that grant, cached by token hash in ``GatewayService.mcp_caller``), Host/Origin, the
    declared length, Jupyter's activity stamp, and one ASGI scope shared by all of them.

    Only ``Authorization`` headers authenticate (never cookies), so a cross-site page cannot
    ride on a browser's session: the XSRF cookie check does not apply, and Jupyter's
    ``@web.authenticated`` is replaced by the token check below (hence ``allow_unauthenticated``,
    which only tells Jupyter's start-up audit that this is deliberate).

    The body is streamed (``@stream_request_body``) so nothing of it is read before Host/Origin,
    the token and the declared length pass in ``prepare``; a refusal there answers at once and
    Tornado closes the connection instead of reading the rest. A body without a declared length
    (chunked) is counted as it arrives and refused with 413 once it passes the limit.
    """

    def initialize(self, service: GatewayService) -> None:  # type: ignore[override]
        super().initialize(app=service.mcp_asgi)
        self.service = service
        self.caller: Caller | None = None
        self._body = bytearray()

    def check_xsrf_cookie(self) -> None:
        return None

    async def prepare(self) -> None:
        self.caller = self.service.mcp_caller(self.request.headers.get("Authorization"))
        scope = self.build_scope()
        refusal = await self.service.mcp_refusal(scope)
        if refusal is not None:
            await self.respond_with(refusal)
            return
        scope[PRECHECKED_SCOPE_KEY] = True
        if self.caller is not None:  # an agent at work keeps an idle-culled server alive
            self.settings[ACTIVITY_KEY] = utcnow()

    async def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        limit = self.service.config.max_mcp_body_bytes
        if len(self._body) + len(chunk) > limit:
            self._body.clear()
            await self.respond_with(self.service.mcp_body_too_large())
            return
        self._body.extend(chunk)

    def request_body(self) -> bytes:
        return bytes(self._body)

    def asgi_scope_extras(self) -> dict[str, Any]:
        return {CALLER_SCOPE_KEY: self.caller} if self.caller is not None else {}

    @allow_unauthenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self._finished:  # refused while the body arrived (too large)
            return
        await self._forward()

    head = post = delete = patch = put = options = get


def routes(service: GatewayService) -> list[tuple[str, type[web.RequestHandler], dict[str, Any]]]:
    """Handler specs relative to ``base_url`` (the ExtensionApp prefixes it)."""
    job = r"(?P<job_id>[^/]+)"
    decision = r"(?P<approval_id>[^/]+)/(?P<decision>approve|deny)"
    rest: list[tuple[str, type[web.RequestHandler]]] = [
        (f"{API}/summary", SummaryHandler),
        (f"{API}/tools/(?P<tool>[^/]+)", ToolHandler),
        (f"{API}/jobs", JobsHandler),
        (f"{API}/jobs/{job}", JobHandler),
        (f"{API}/jobs/{job}/cancel", JobCancelHandler),
        (f"{API}/jobs/{job}/events", JobEventsHandler),
        (f"{API}/jobs/{job}/result", JobResultHandler),
        (f"{API}/stream", StreamHandler),
        (f"{API}/sessions", SessionsHandler),
        (f"{API}/approvals", ApprovalsHandler),
        (f"{API}/approvals/{decision}", ApprovalDecisionHandler),
        (f"{API}/grants", GrantsHandler),
        (f"{API}/grants/(?P<name>[^/]+)", GrantHandler),
        (f"{API}/audit", AuditHandler),
        (f"{API}/policy", PolicyHandler),
    ]
    specs: list[tuple[str, type[web.RequestHandler], dict[str, Any]]] = [
        (pattern, handler, {}) for pattern, handler in rest
    ]
    if service.config.mcp_enabled:
        specs.append((f"{MCP_PATH}/?", MCPHandler, {"service": service}))
    return specs

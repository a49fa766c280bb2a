"""``{base_url}llmgw/mcp`` served by Tornado itself for the common requests (the quick path).

Why: with the gateway's own work down to about 0.2 ms of CPU per ``llm_job_status``, most of an
MCP request's cost was the way to the tool: an ASGI scope, the bridge's task and ``receive``/
``send`` messages, a Starlette request for the Host/Origin check, the endpoint's body replay and
the pydantic result model dumped through the SDK's wire surface. ``QuickMCPHandler`` answers the
requests that stream nothing (``mcp_quick``: ``tools/call`` of the quick tools without a progress
token, ``ping``) straight from Tornado, and hands everything else (``initialize``, ``tools/list``,
notifications, streaming calls, GET streams, DELETE, the 2026-07-28 stateless path, every
refusal) to the ASGI app through ``handlers.MCPHandler`` unchanged.

What the quick path checks, in ``prepare`` before a body byte is read, is what the full path
checks, with the same answers when something fails (it then falls back to the full path, which
refuses): the bearer token (owner or grant, the same ``GatewayService.mcp_caller`` with its
revocation-safe cache), the endpoint running, exactly one Host and at most one Origin passing the
SDK's DNS-rebinding check (passing pairs remembered by the endpoint), and the declared length.
In ``post`` the body is one JSON-RPC request ``MCPEndpoint.quick_session`` accepts (session of
the same caller, handshake-era or absent protocol version, JSON Accept and Content-Type);
anything else goes on to the ASGI app as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timezone
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated
from tornado import web

from llmgw_jupyter.server.handlers import ACTIVITY_KEY, MCP_PATH, MCPHandler
from llmgw_jupyter.server.mcp_endpoint import PRECHECKED_SCOPE_KEY, MCPEndpoint, json_message
from llmgw_jupyter.server.mcp_quick import EVENT_STREAM_HEADERS, SESSION_HEADER
from llmgw_jupyter.server.service import GatewayService


@web.stream_request_body
class QuickMCPHandler(MCPHandler):
    """``MCPHandler`` plus the quick path served without the ASGI bridge."""

    def initialize(self, service: GatewayService) -> None:  # type: ignore[override]
        super().initialize(service)
        self._endpoint: MCPEndpoint | None = None  # set once the quick checks passed
        self._quick_call: tuple[str, str | int] | None = None  # (session, request id) running

    async def prepare(self) -> None:
        endpoint = await self._quick_endpoint()
        if endpoint is None:
            await super().prepare()
            return
        self._endpoint = endpoint
        # An agent at work keeps an idle-culled server alive (Jupyter's aware UTC stamps).
        self.settings[ACTIVITY_KEY] = datetime.now(timezone.utc)

    async def _quick_endpoint(self) -> MCPEndpoint | None:
        """The endpoint if this request passed every header check the full path makes."""
        service = self.service
        endpoint = service.mcp
        request = self.request
        if request.method != "POST" or endpoint is None or service.state != "running":
            return None
        if not endpoint.running:
            return None
        headers = request.headers
        self.caller = service.mcp_caller(headers.get("Authorization"))
        if self.caller is None:
            return None
        hosts = headers.get_list("Host")
        origins = headers.get_list("Origin")
        if len(hosts) != 1 or len(origins) > 1:
            return None  # unusual: the full path judges it
        if not await endpoint.host_and_origin_pass(hosts[0], origins[0] if origins else None):
            return None
        declared = headers.get("Content-Length")
        if declared is not None and not (
            declared.isdigit() and int(declared) <= endpoint.max_body_bytes
        ):
            return None
        return endpoint

    @allow_unauthenticated
    async def post(self, *args: Any, **kwargs: Any) -> None:
        if self._finished:  # refused while the body arrived (too large)
            return
        endpoint = self._endpoint
        if endpoint is None:
            await self._forward()
            return
        if not await self._answer_quick(endpoint):
            self.build_scope()[PRECHECKED_SCOPE_KEY] = True  # prepare's checks passed
            await self._forward()

    def on_connection_close(self) -> None:
        """As on the ASGI path: a call whose client went away is cancelled after the grace."""
        super().on_connection_close()
        running = self._quick_call
        if running is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(self.disconnect_grace, self._cancel_abandoned, running)

    def _cancel_abandoned(self, running: tuple[str, str | int]) -> None:
        endpoint = self._endpoint
        if self._quick_call == running and endpoint is not None and endpoint.quick is not None:
            endpoint.quick.cancel(*running)

    async def _answer_quick(self, endpoint: MCPEndpoint) -> bool:
        """Answer the request on the quick path if it qualifies; True if it was answered."""
        caller = self.caller
        assert caller is not None
        message = json_message(self.request_body())
        key = caller.key
        session_id = endpoint.quick_session("POST", self.request.headers.get, message, key)
        if session_id is None:
            return False
        assert message is not None
        self._quick_call = (session_id, message["id"])
        try:
            answer = await endpoint.answer_quick(session_id, message, caller, key)
        finally:
            self._quick_call = None
        self.set_header(SESSION_HEADER, session_id)
        if answer is None:  # cancelled: no JSON-RPC response, an empty event stream
            for name, value in EVENT_STREAM_HEADERS:
                self.set_header(name, value)
            answer = b""
        else:
            self.set_header("Content-Type", "application/json")
        with contextlib.suppress(OSError):  # StreamClosedError: the client went away
            await self.finish(answer)
        return True


def quick_routes(
    specs: list[tuple[str, type[web.RequestHandler], dict[str, Any]]],
) -> list[tuple[str, type[web.RequestHandler], dict[str, Any]]]:
    """``handlers.routes`` with the MCP route served by ``QuickMCPHandler``."""
    return [
        (pattern, QuickMCPHandler if handler is MCPHandler else handler, kwargs)
        for pattern, handler, kwargs in specs
    ]


__all__ = ["MCP_PATH", "QuickMCPHandler", "quick_routes"]

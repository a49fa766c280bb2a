"""Real kernels (jupyter_client) for the tests; the Jupyter server is ``start_jupyter``'s.

``KernelHarness`` records every IOPub message and folds widget comm traffic (comm_open and
comm_msg updates) into per-model state, so tests assert on what a frontend would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager

OUTPUT_TYPES = {"stream", "display_data", "execute_result", "error"}
MODEL_REF = re.compile(r"^IPY_MODEL_(\w+)$")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@dataclass
class Execution:
    msg_id: str
    reply: dict[str, Any]
    messages: list[dict[str, Any]]

    @property
    def status(self) -> str:
        return str(self.reply["content"]["status"])

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["msg_type"] in OUTPUT_TYPES]

    def stream(self, name: str = "stdout") -> str:
        return "".join(
            m["content"]["text"]
            for m in self.messages
            if m["msg_type"] == "stream" and m["content"]["name"] == name
        )

    def data(self, mime: str) -> list[Any]:
        return [
            m["content"]["data"][mime]
            for m in self.messages
            if m["msg_type"] in ("display_data", "execute_result") and mime in m["content"]["data"]
        ]

    @property
    def error(self) -> dict[str, Any] | None:
        errors = [m["content"] for m in self.messages if m["msg_type"] == "error"]
        return errors[0] if errors else None


@dataclass
class WidgetModel:
    model_id: str
    state: dict[str, Any]
    history: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (recv, update)
    initial: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.state.get("_dom_classes") or ())


class KernelHarness:
    """A kernel, its client, and everything it has sent on IOPub."""

    def __init__(self, kc: AsyncKernelClient, km: AsyncKernelManager | None = None) -> None:
        self._km = km
        self.kc = kc
        self.kc.start_channels()
        self.messages: list[dict[str, Any]] = []
        self.models: dict[str, WidgetModel] = {}
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.kc.wait_for_ready(timeout=60)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            try:
                msg = await self.kc.get_iopub_msg(timeout=3600)
            except Exception:
                continue
            msg["received"] = time.time()
            self.messages.append(msg)
            content = msg["content"]
            if msg["msg_type"] == "comm_open" and content.get("target_name") == "jupyter.widget":
                state = dict(content["data"].get("state") or {})
                self.models[content["comm_id"]] = WidgetModel(
                    content["comm_id"], state, initial=dict(state)
                )
            elif msg["msg_type"] == "comm_msg":
                data = content.get("data") or {}
                model = self.models.get(content["comm_id"])
                if model is not None and data.get("method") in ("update", "echo_update"):
                    model.state.update(data.get("state") or {})
                    model.history.append((msg["received"], dict(data.get("state") or {})))
            self._changed.set()

    async def restart(self) -> None:
        """Restart the kernel; the reader pauses (wait_for_ready reads IOPub itself)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.km.restart_kernel(now=True)
        await self.start()

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self.kc.stop_channels()
        if self._km is not None:
            await self._km.shutdown_kernel(now=True)

    @property
    def km(self) -> AsyncKernelManager:
        if self._km is None:
            raise AssertionError("this kernel belongs to a Jupyter server")
        return self._km

    async def execute(
        self, code: str, timeout: float = 90.0, *, allow_error: bool = False
    ) -> Execution:
        msg_id = self.kc.execute(code, allow_stdin=False)
        deadline = time.monotonic() + timeout
        while True:
            reply = await self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        await self.wait_for(
            lambda: any(
                m["msg_type"] == "status"
                and m["content"]["execution_state"] == "idle"
                and m["parent_header"].get("msg_id") == msg_id
                for m in self.messages
            ),
            timeout=max(1.0, deadline - time.monotonic()),
            what=f"idle after {code[:60]!r}",
        )
        execution = Execution(
            msg_id, reply, [m for m in self.messages if m["parent_header"].get("msg_id") == msg_id]
        )
        if execution.status != "ok" and not allow_error:
            raise AssertionError(
                f"cell failed: {code!r}\n{execution.error}\nstderr: {execution.stream('stderr')}"
            )
        return execution

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition"
    ) -> Any:
        """Wake on every new message, never sleep-and-hope."""
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    # -- widgets -----------------------------------------------------------------------------
    def widgets_with(self, dom_class: str) -> list[WidgetModel]:
        return [m for m in self.models.values() if dom_class in m.classes]

    def child(self, parent: WidgetModel, dom_class: str) -> WidgetModel:
        """The descendant of ``parent`` carrying ``dom_class`` (searching the children refs)."""
        found = self._find(parent, dom_class)
        if found is None:
            raise AssertionError(f"no {dom_class} under {parent.model_id}")
        return found

    def _find(self, parent: WidgetModel, dom_class: str) -> WidgetModel | None:
        for ref in parent.state.get("children") or ():
            match = MODEL_REF.match(str(ref))
            model = self.models.get(match.group(1)) if match else None
            if model is None:
                continue
            if dom_class in model.classes:
                return model
            deeper = self._find(model, dom_class)
            if deeper is not None:
                return deeper
        return None

    def job_widget(self, job_id: str) -> WidgetModel | None:
        for model in self.widgets_with("llmgw-job"):
            header = self._find(model, "llmgw-header")
            if header is not None and f"<code>{job_id}</code>" in str(header.state.get("value")):
                return model
        return None

    async def wait_job_widget(self, job_id: str, timeout: float = 30.0) -> WidgetModel:
        return await self.wait_for(lambda: self.job_widget(job_id), timeout, f"widget of {job_id}")

    def widget_status(self, job_widget: WidgetModel) -> str | None:
        header = self.child(job_widget, "llmgw-header")
        match = re.search(r'data-status="(\w+)"', str(header.state.get("value")))
        return match.group(1) if match else None

    def status_history(self, job_widget: WidgetModel) -> list[str]:
        """Every status the header showed, in order, without repeats."""
        header = self.child(job_widget, "llmgw-header")
        values = [header.initial.get("value")]
        values += [update["value"] for _, update in header.history if "value" in update]
        seen: list[str] = []
        for value in values:
            match = re.search(r'data-status="(\w+)"', str(value))
            if match and (not seen or seen[-1] != match.group(1)):
                seen.append(match.group(1))
        return seen

    async def wait_status(
        self, job_id: str, statuses: set[str], timeout: float = 60.0
    ) -> WidgetModel:
        widget = await self.wait_job_widget(job_id, timeout)
        await self.wait_for(
            lambda: self.widget_status(widget) in statuses,
            timeout,
            f"widget of {job_id} in {statuses}",
        )
        return widget

    def send_comm(self, model_id: str, data: dict[str, Any]) -> None:
        msg = self.kc.session.msg("comm_msg", {"comm_id": model_id, "data": data})
        self.kc.shell_channel.send(msg)

    def click(self, button: WidgetModel) -> None:
        self.send_comm(button.model_id, {"method": "custom", "content": {"event": "click"}})

    def set_value(self, model: WidgetModel, value: Any) -> None:
        self.send_comm(
            model.model_id, {"method": "update", "state": {"value": value}, "buffer_paths": []}
        )


async def start_kernel(env: dict[str, str], cwd: Path) -> KernelHarness:
    km = AsyncKernelManager(kernel_name="python3")
    await km.start_kernel(env=env, cwd=str(cwd))
    harness = KernelHarness(km.client(), km)
    await harness.start()
    return harness


async def connect_kernel(connection_file: Path) -> KernelHarness:
    """A client to a kernel someone else (a Jupyter server) started."""
    kc = AsyncKernelClient()
    kc.load_connection_file(str(connection_file))
    harness = KernelHarness(kc)
    await harness.start()
    return harness


async def value(kernel: KernelHarness, expression: str) -> Any:
    """Evaluate ``expression`` in the kernel and bring its JSON value back."""
    run = await kernel.execute(f"import json as _j; print(_j.dumps({expression}))")
    return json.loads(run.stream().strip().splitlines()[-1])


async def loaded_kernel(
    kernel_factory: Any, env: dict[str, str], tmp_path: Path, setup: list[str]
) -> KernelHarness:
    """A kernel on its own data dir with the magics loaded and ``WORK`` set, then each cell of
    ``setup`` run."""
    harness: KernelHarness = await kernel_factory({**env, "LLMGW_DATA_DIR": str(tmp_path / "data")})
    await harness.execute(f"%load_ext llmgw_jupyter\nWORK = {str(tmp_path)!r}")
    for cell in setup:
        await harness.execute(cell)
    return harness

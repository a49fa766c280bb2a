"""When jobs run: one first-in-first-out queue, a global limit, per-provider limits, and the
owner's reserved part of the queue. What running a job means is the supervisor's business."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from llmgw_jupyter.errors import SaturatedError
from llmgw_jupyter.runtime.config import RuntimeConfig
from llmgw_jupyter.runtime.running import RunningJob

JobRunner = Callable[[RunningJob], Coroutine[Any, Any, None]]


class Scheduler:
    """Starts queued jobs as slots free up; ``run`` supervises one job to its end."""

    def __init__(self, config: RuntimeConfig, run: JobRunner) -> None:
        self.config = config
        self._run = run
        self._queue: deque[tuple[str, str]] = deque()  # (job_id, provider)
        self._running: dict[str, RunningJob] = {}
        self.closing = False

    def check_capacity(self, caller: str = "owner") -> None:
        """Refuse (saturated) when the queue has no place for this caller."""
        limit = self.config.max_queued
        if caller != "owner":  # the owner always keeps room in the queue
            limit = max(0, limit - self.config.owner_reserved_queue)
        if len(self._queue) >= limit:
            raise SaturatedError(
                f"the job queue is full ({len(self._queue)} waiting, {len(self._running)} "
                f"running; limit {limit} for this caller, c.LLMGatewayApp.max_queued); "
                "retry later or cancel jobs"
            )

    def enqueue(self, job_id: str, provider: str) -> None:
        self._queue.append((job_id, provider))
        self.schedule()

    def dequeue(self, job_id: str) -> None:
        """Forget a queued job (it was cancelled); nothing if it is not queued."""
        self._queue = deque(item for item in self._queue if item[0] != job_id)

    def drain(self) -> list[str]:
        """Empty the queue (the gateway stops); returns the ids that were waiting, in order."""
        job_ids = [job_id for job_id, _ in self._queue]
        self._queue.clear()
        return job_ids

    def running(self, job_id: str) -> RunningJob | None:
        return self._running.get(job_id)

    def all_running(self) -> list[RunningJob]:
        return list(self._running.values())

    def adopt(self, job_id: str, provider: str, follow: JobRunner) -> RunningJob:
        """Take in a run that is already going (followed again after a restart)."""
        return self._start(job_id, provider, follow)

    def schedule(self) -> None:
        """Launch queued jobs, oldest first, while the global and provider limits allow."""
        while not self.closing and self._queue and len(self._running) < self.config.max_running:
            busy: dict[str, int] = {}
            for running in self._running.values():
                busy[running.provider] = busy.get(running.provider, 0) + 1
            for index, (job_id, provider) in enumerate(self._queue):
                if busy.get(provider, 0) < self._provider_limit(provider):
                    del self._queue[index]
                    self._start(job_id, provider, self._run)
                    break
            else:
                return

    def _provider_limit(self, provider: str) -> int:
        return self.config.provider_limits.get(provider, self.config.max_running)

    def _start(self, job_id: str, provider: str, run: JobRunner) -> RunningJob:
        running = RunningJob(job_id=job_id, provider=provider)
        self._running[job_id] = running
        running.task = asyncio.get_running_loop().create_task(run(running))
        running.task.add_done_callback(lambda _task: self._finished(job_id))
        return running

    def _finished(self, job_id: str) -> None:
        self._running.pop(job_id, None)
        self.schedule()

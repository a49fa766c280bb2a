"""The job runtime: pure asyncio, no Jupyter, Tornado or IPython imports."""

from __future__ import annotations

from llmgw_jupyter.records import JobEvent, JobRecord, JobSpec, JobStatus, Usage
from llmgw_jupyter.runtime.config import RuntimeConfig
from llmgw_jupyter.runtime.manager import Runtime
from llmgw_jupyter.runtime.notifier import RESYNC, JobChange
from llmgw_jupyter.runtime.outcome import StopReason

__all__ = [
    "RESYNC",
    "JobChange",
    "JobEvent",
    "JobRecord",
    "JobSpec",
    "JobStatus",
    "Runtime",
    "RuntimeConfig",
    "StopReason",
    "Usage",
]

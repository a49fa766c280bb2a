"""The job runtime: pure asyncio, no Jupyter, Tornado or IPython imports.

``Runtime`` and ``RuntimeConfig`` are imported on first use: the store imports
``runtime.models``, and an eager import of the manager here (which imports the store) would make
``import llmgw_jupyter.store.jobs`` circular.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmgw_jupyter.runtime.models import JobEvent, JobRecord, JobSpec, JobStatus, Usage
from llmgw_jupyter.runtime.notifier import JobChange

if TYPE_CHECKING:
    from llmgw_jupyter.runtime.manager import Runtime, RuntimeConfig

__all__ = [
    "JobChange",
    "JobEvent",
    "JobRecord",
    "JobSpec",
    "JobStatus",
    "Runtime",
    "RuntimeConfig",
    "Usage",
]


def __getattr__(name: str) -> Any:
    if name in ("Runtime", "RuntimeConfig"):
        from llmgw_jupyter.runtime import manager

        return getattr(manager, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

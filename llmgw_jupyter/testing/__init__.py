"""Test and demo support: a mock OpenAI Responses API, a CODEX_HOME pointing at it, and a real
Jupyter server or lab subprocess with llmgw.

Names are loaded lazily so ``python -m llmgw_jupyter.testing.mock_responses`` does not import
its own module twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .codex_home import codex_env, find_codex_for_tests, write_codex_home
    from .jupyter_process import JupyterProcess, start_jupyter
    from .mock_responses import MockBehaviour, MockResponsesServer, RecordedRequest

__all__ = [
    "JupyterProcess",
    "MockBehaviour",
    "MockResponsesServer",
    "RecordedRequest",
    "codex_env",
    "find_codex_for_tests",
    "start_jupyter",
    "write_codex_home",
]

_WHERE = {
    "JupyterProcess": "jupyter_process",
    "MockBehaviour": "mock_responses",
    "MockResponsesServer": "mock_responses",
    "RecordedRequest": "mock_responses",
    "codex_env": "codex_home",
    "find_codex_for_tests": "codex_home",
    "start_jupyter": "jupyter_process",
    "write_codex_home": "codex_home",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)

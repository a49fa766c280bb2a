"""Test and demo support: a mock OpenAI Responses API, a CODEX_HOME pointing at it, a mock
Anthropic Messages API with the environment that points Claude Code at it, and a real Jupyter
server or lab subprocess with llmgw.

Names are loaded lazily so ``python -m llmgw_jupyter.testing.mock_responses`` does not import
its own module twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .codex_home import codex_env, find_codex_for_tests, write_codex_home
    from .jupyter_process import JupyterProcess, start_jupyter
    from .mock_anthropic import (
        AnthropicBehaviour,
        AnthropicRequest,
        MockAnthropicServer,
        claude_cli_env,
    )
    from .mock_responses import MockBehaviour, MockResponsesServer, RecordedRequest

__all__ = [
    "AnthropicBehaviour",
    "AnthropicRequest",
    "JupyterProcess",
    "MockAnthropicServer",
    "MockBehaviour",
    "MockResponsesServer",
    "RecordedRequest",
    "claude_cli_env",
    "codex_env",
    "find_codex_for_tests",
    "start_jupyter",
    "write_codex_home",
]

_WHERE = {
    "AnthropicBehaviour": "mock_anthropic",
    "AnthropicRequest": "mock_anthropic",
    "JupyterProcess": "jupyter_process",
    "MockAnthropicServer": "mock_anthropic",
    "MockBehaviour": "mock_responses",
    "MockResponsesServer": "mock_responses",
    "RecordedRequest": "mock_responses",
    "claude_cli_env": "mock_anthropic",
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

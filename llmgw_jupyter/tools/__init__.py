"""The one tool registry behind MCP, REST and the magics."""

from typing import Any

from llmgw_jupyter.tools.context import Caller, ToolContext
from llmgw_jupyter.tools.registry import ToolDefinition, ToolRegistry, builtin_registry

__all__ = [
    "REGISTRY",
    "TOOLS",
    "TOOL_NAMES",
    "Caller",
    "ToolContext",
    "ToolDefinition",
    "ToolRegistry",
    "builtin_registry",
]


def __getattr__(name: str) -> Any:
    """``REGISTRY``, ``TOOLS``, ``TOOL_NAMES``: the installed providers' tools, on first use."""
    if name in ("REGISTRY", "TOOLS", "TOOL_NAMES", "JOB_STARTING_TOOLS"):
        from llmgw_jupyter.tools import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

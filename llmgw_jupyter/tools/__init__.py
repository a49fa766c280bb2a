"""The one tool registry behind MCP, REST and the magics."""

from llmgw_jupyter.tools.context import Caller, ToolContext
from llmgw_jupyter.tools.registry import REGISTRY, TOOL_NAMES, TOOLS, ToolDefinition

__all__ = ["REGISTRY", "TOOLS", "TOOL_NAMES", "Caller", "ToolContext", "ToolDefinition"]

"""Coding-agent CLI providers. Adding a CLI means one module and its registration: an entry point
in the ``llmgw_jupyter.providers`` group, or a ``class`` in configuration (see ``registry``)."""

from __future__ import annotations

from llmgw_jupyter.providers.base import (
    Command,
    ParsedEvent,
    Provider,
    ProviderConfigError,
    ProviderSettings,
    StreamParser,
    ToolSpec,
    Verdict,
)

__all__ = [
    "Command",
    "ParsedEvent",
    "Provider",
    "ProviderConfigError",
    "ProviderSettings",
    "StreamParser",
    "ToolSpec",
    "Verdict",
]

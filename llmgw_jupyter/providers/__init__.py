"""Coding-agent CLI providers. Adding a CLI means one module and one entry in ``make_providers``."""

from __future__ import annotations

from llmgw_jupyter.providers.base import Command, ParsedEvent, Provider, StreamParser, Verdict

__all__ = ["Command", "ParsedEvent", "Provider", "StreamParser", "Verdict"]

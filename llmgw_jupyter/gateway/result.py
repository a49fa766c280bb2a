"""``ToolResult``: the one outcome of a tool call that every adapter renders."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from llmgw_jupyter.policy import Decision


class ToolResult:
    """What every adapter renders: MCP (isError + structuredContent), REST (status + JSON).

    A success's ``text`` (its structured answer as compact JSON) is made on first use only: the
    REST side answers with ``structured`` and never reads it.
    """

    __slots__ = ("_text", "error", "is_error", "structured")

    def __init__(
        self,
        is_error: bool,
        text: str | None,
        structured: dict[str, Any],
        error: str | None = None,  # category: policy_denied, rate_limited, invalid_input, ...
    ) -> None:
        self.is_error = is_error
        self._text = text
        self.structured = structured
        self.error = error

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = json.dumps(self.structured, separators=(",", ":"))
        return self._text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ToolResult):
            return NotImplemented
        return (self.is_error, self.text, self.structured, self.error) == (
            other.is_error,
            other.text,
            other.structured,
            other.error,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return (
            f"ToolResult(is_error={self.is_error!r}, text={self.text!r}, "
            f"structured={self.structured!r}, error={self.error!r})"
        )

    @classmethod
    def success(cls, output: BaseModel) -> ToolResult:
        return cls(False, None, output.model_dump(mode="json"))

    @classmethod
    def failure(
        cls, category: str, message: str, *, field: str | None = None, **extra: Any
    ) -> ToolResult:
        structured = {"error": {"category": category, "message": message, "field": field}, **extra}
        return cls(True, f"{category}: {message}", structured, category)

    @classmethod
    def denied(cls, decision: Decision, category: str | None = None) -> ToolResult:
        kind = category or (
            "rate_limited" if decision.retry_after_seconds is not None else "policy_denied"
        )
        structured = {
            **decision.to_dict(),
            "error": {"category": kind, "message": decision.reason, "field": None},
        }
        return cls(True, decision.denial_text(), structured, kind)

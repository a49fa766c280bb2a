"""``ToolResult``: the one outcome of a tool call that every adapter renders."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from llmgw_jupyter.contract import Encoded, output_json
from llmgw_jupyter.policy import Decision


class ToolResult:
    """What every adapter renders: MCP (isError + structuredContent), REST (status + JSON).

    A success keeps its output model and makes its JSON once, with pydantic-core
    (``structured_json``, also its ``text``); ``structured`` (the same answer as a dict) is made
    only when someone reads it (REST, the SDK path). The MCP quick path splices the JSON into
    its answer as it is (``mcp_results.answer_bytes``), so a status call costs one encoding
    instead of a ``model_dump``, a ``json.dumps`` and a second encode.
    """

    __slots__ = ("_output", "_structured", "_text", "error", "is_error")

    def __init__(
        self,
        is_error: bool,
        text: str | None,
        structured: dict[str, Any] | None,
        error: str | None = None,  # category: policy_denied, rate_limited, invalid_input, ...
        *,
        output: BaseModel | None = None,
    ) -> None:
        self.is_error = is_error
        self._text = text
        self._structured = structured
        self._output = output
        self.error = error

    @property
    def text(self) -> str:
        """The text content: an error's message, a success's structured answer as JSON."""
        if self._text is None:
            self._text = self._encode()
        return self._text

    @property
    def structured_json(self) -> str | None:
        """A success's structured answer as compact JSON (``structuredContent``); None for an
        error, whose ``structured`` is not sent as structured content."""
        return None if self.is_error else self.text

    @property
    def structured(self) -> dict[str, Any]:
        """The structured answer as a dict: for a success, what its JSON parses to.

        Dumped from the model (``mode="json"``, the same pydantic-core serializers as the JSON,
        and cheaper than parsing it); one difference: a non-finite float stays a float here,
        where JSON, which has no such numbers, says ``null``.
        """
        if self._structured is None:
            output = self._output
            self._structured = output.model_dump(mode="json") if output is not None else {}
        return self._structured

    def _encode(self) -> str:
        """The structured answer as compact JSON, once (``contract.output_json``)."""
        output = self._output
        if output is not None:
            return output_json(output)
        return json.dumps(self.structured, separators=(",", ":"))

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
    def success(cls, output: BaseModel | Encoded) -> ToolResult:
        if isinstance(output, Encoded):  # its JSON is made already
            return cls(False, output.json, None, output=output.output)
        return cls(False, None, None, output=output)

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

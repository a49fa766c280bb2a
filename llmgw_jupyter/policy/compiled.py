"""A validated policy compiled for fast decisions (regexes built, paths split, pointers made)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmgw_jupyter.policy.conditions import CompiledCondition, compile_condition, split_path
from llmgw_jupyter.policy.limits import CompiledLimit, compile_limit
from llmgw_jupyter.policy.model import (
    DEFAULT_APPROVAL_TIMEOUT,
    PolicyDocument,
    PolicyProblem,
    PolicyValidationError,
    ToolRule,
    json_pointer,
    validate_document,
)

ALLOW_ALL: dict[str, Any] = {"version": "1", "default": "allow"}


@dataclass(frozen=True, slots=True)
class RequiredArg:
    path: str
    segments: tuple[str, ...]
    pointer: str


@dataclass(frozen=True, slots=True)
class CompiledTool:
    name: str
    action: str
    action_pointer: str
    reason: str | None
    require: tuple[RequiredArg, ...]
    deny_if: tuple[CompiledCondition, ...]
    arg_rules: tuple[CompiledCondition, ...]
    limits: tuple[CompiledLimit, ...]  # rate limits (calls)
    approval_timeout: float
    budgets: tuple[CompiledLimit, ...] = ()  # tokens / cost_usd, checked when a job starts


class Policy:
    """An immutable, compiled policy; ``document`` is the validated model, ``raw`` the JSON."""

    def __init__(self, document: PolicyDocument, raw: dict[str, Any], source: str | None) -> None:
        self.document = document
        self.raw = raw
        self.source = source
        self.default = document.default
        self.hidden: dict[str, str] = {}
        for index, name in enumerate(document.hide):
            self.hidden.setdefault(name, f"/hide/{index}")
        self.hide_all_pointer = self.hidden.get("*")
        every = [
            compile_limit(limit, f"/all_tools/limits/{i}")
            for i, limit in enumerate(document.all_tools.limits)
        ]
        self.all_limits = tuple(x for x in every if not x.is_budget)
        self.all_budgets = tuple(x for x in every if x.is_budget)
        self.tools = {name: _compile_tool(name, rule) for name, rule in document.tools.items()}

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.raw)

    def at(self, pointer: str) -> Any:
        """The JSON at a pointer of the source document (for explanations)."""
        node: Any = self.raw
        if not pointer:
            return node
        for part in pointer.split("/")[1:]:
            key = part.replace("~1", "/").replace("~0", "~")
            node = node[int(key)] if isinstance(node, list) else node.get(key)
            if node is None:
                return None
        return node

    def unknown_tools(self, known: Iterable[str]) -> list[str]:
        """Tool names the policy mentions that the gateway does not have (likely typos)."""
        names = set(known)
        mentioned = set(self.tools) | (set(self.hidden) - {"*"})
        return sorted(mentioned - names)


def _compile_tool(name: str, rule: ToolRule) -> CompiledTool:
    base = json_pointer(["tools", name])
    limits = [compile_limit(x, f"{base}/limits/{i}") for i, x in enumerate(rule.limits)]
    return CompiledTool(
        name=name,
        action=rule.action,
        action_pointer=base + "/action" if "action" in rule.model_fields_set else base,
        reason=rule.reason,
        require=tuple(
            RequiredArg(path, split_path(path), f"{base}/require/{i}")
            for i, path in enumerate(rule.require)
        ),
        deny_if=tuple(
            compile_condition(c, f"{base}/deny_if/{i}") for i, c in enumerate(rule.deny_if)
        ),
        arg_rules=tuple(
            compile_condition(c, f"{base}/arg_rules/{i}") for i, c in enumerate(rule.arg_rules)
        ),
        limits=tuple(x for x in limits if not x.is_budget),
        approval_timeout=rule.approval.timeout if rule.approval else DEFAULT_APPROVAL_TIMEOUT,
        budgets=tuple(x for x in limits if x.is_budget),
    )


def load_policy(data: Any, source: str | None = None) -> Policy:
    """Validate and compile a parsed policy; raises ``PolicyValidationError``."""
    document = validate_document(data, source)
    return Policy(document, copy.deepcopy(data), source)


def allow_all_policy() -> Policy:
    """The owner's policy when none is configured."""
    return load_policy(ALLOW_ALL, "<default owner policy: allow everything>")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def parse_policy_text(text: str, source: str | None = None) -> Policy:
    """Parse JSON (duplicate keys refused: the later one would silently win) and load it."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise PolicyValidationError([PolicyProblem("", message)], source) from None
    except ValueError as exc:
        raise PolicyValidationError([PolicyProblem("", f"invalid JSON: {exc}")], source) from None
    return load_policy(data, source)


def load_policy_file(path: str | Path) -> Policy:
    """Read and load a policy file; unreadable files raise ``OSError``."""
    return parse_policy_text(Path(path).read_text(encoding="utf-8"), str(path))

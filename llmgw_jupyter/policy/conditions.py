"""Conditions on call arguments, compiled once at load so a decision only does the comparison.

Semantics (documented for policy authors):
- ``path`` is ``args.<dotted.path>``; digits index into lists. An absent value or JSON ``null``
  is *missing*: only ``exists`` holds on it (with ``value: false``); every other op does not hold.
  Use ``require`` to demand an argument.
- A value of the wrong type for the op (``lt`` on a string, ``regex`` on a list, a ``within``
  path that is relative or does not resolve) cannot be evaluated; the engine refuses such a call
  in both ``deny_if`` and ``arg_rules`` (fail closed).
- ``eq``/``neq``/``in``/``not_in`` use JSON equality (``true`` is not ``1``); ``regex`` searches
  (anchor with ``^...$`` for a full match); ``contains`` is a substring for strings, a member for
  lists, a key for objects; ``max_length`` bounds strings, lists and objects; ``within`` follows
  symlinks and expands ``~``, and on a list every element must be inside one of the directories.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmgw_jupyter.policy.model import Condition

MISSING: Any = object()

# (holds, problem): problem is set when the value cannot be evaluated for the op.
Outcome = tuple[bool, str | None]
_HOLDS: Outcome = (True, None)
_FAILS: Outcome = (False, None)


def split_path(path: str) -> tuple[str, ...]:
    """``"args.a.b"`` -> ``("a", "b")``; the model has already checked the form."""
    return tuple(path.split(".")[1:])


def resolve(args: Mapping[str, Any], segments: tuple[str, ...]) -> Any:
    """The value at ``segments`` or ``MISSING`` (absent or null)."""
    value: Any = args
    for segment in segments:
        if isinstance(value, Mapping):
            value = value.get(segment, MISSING)
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return MISSING if value is None else value


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: booleans never equal numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _real_dir(directory: str) -> str:
    real = os.path.realpath(os.path.expanduser(directory))
    return real if real.endswith(os.sep) else real + os.sep


def _inside(path: Any, dirs: tuple[str, ...]) -> Outcome:
    if not isinstance(path, str) or not path:
        return False, "is not a path"
    expanded = os.path.expanduser(path)
    if not os.path.isabs(expanded):
        return False, f"{path!r} is not an absolute path"
    real = os.path.realpath(expanded)
    if not os.path.exists(real):
        return False, f"{path!r} does not resolve to an existing path"
    candidate = real if real.endswith(os.sep) else real + os.sep
    return (any(candidate.startswith(d) for d in dirs), None)


Check = Callable[[Any], Outcome]


def _compile_check(op: str, value: Any) -> Check:
    """Return a function of the resolved (non-missing) actual value."""
    if op == "exists":  # only reached for a present value
        return lambda actual: (value is True, None)
    if op == "eq":
        return lambda actual: (json_equal(actual, value), None)
    if op == "neq":
        return lambda actual: (not json_equal(actual, value), None)
    if op in ("in", "not_in"):
        members = tuple(value)
        strings = frozenset(m for m in members if isinstance(m, str))
        want = op == "in"

        def member(actual: Any) -> Outcome:
            if isinstance(actual, str):
                found = actual in strings
            else:
                found = any(json_equal(actual, m) for m in members)
            return (found == want, None)

        return member
    if op in ("lt", "lte", "gt", "gte"):
        compare: Callable[[Any], bool] = {
            "lt": lambda a: a < value,
            "lte": lambda a: a <= value,
            "gt": lambda a: a > value,
            "gte": lambda a: a >= value,
        }[op]
        return lambda actual: (
            (compare(actual), None) if _is_number(actual) else (False, "is not a number")
        )
    if op == "regex":
        pattern = re.compile(value)
        return lambda actual: (
            (pattern.search(actual) is not None, None)
            if isinstance(actual, str)
            else (False, "is not a string")
        )
    if op == "contains":

        def contains(actual: Any) -> Outcome:
            if isinstance(actual, str):
                return (isinstance(value, str) and value in actual, None)
            if isinstance(actual, list):
                return (any(json_equal(item, value) for item in actual), None)
            if isinstance(actual, Mapping):
                return (isinstance(value, str) and value in actual, None)
            return False, "is not a string, list or object"

        return contains
    if op == "max_length":
        return lambda actual: (
            (len(actual) <= value, None)
            if isinstance(actual, str | list | Mapping)
            else (False, "has no length")
        )
    if op == "within":
        dirs = tuple(_real_dir(d) for d in value)

        def within(actual: Any) -> Outcome:
            for item in actual if isinstance(actual, list) else [actual]:
                holds, problem = _inside(item, dirs)
                if not holds:
                    return holds, problem
            return _HOLDS

        return within
    raise ValueError(f"unknown op {op}")  # the model rejects these first


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """A condition ready to run: resolved path segments and a pre-built comparison."""

    pointer: str
    path: str
    op: str
    value: Any
    reason: str | None
    segments: tuple[str, ...]
    check: Check

    def evaluate(self, args: Mapping[str, Any]) -> Outcome:
        actual = resolve(args, self.segments)
        if actual is MISSING:
            return _HOLDS if self.op == "exists" and self.value is False else _FAILS
        return self.check(actual)

    def describe(self) -> str:
        """Human form for messages, e.g. ``args.sandbox eq "danger-full-access"``."""
        return f"{self.path} {self.op} {json.dumps(self.value)}"


def compile_condition(condition: Condition, pointer: str) -> CompiledCondition:
    return CompiledCondition(
        pointer=pointer,
        path=condition.path,
        op=condition.op,
        value=condition.value,
        reason=condition.reason,
        segments=split_path(condition.path),
        check=_compile_check(condition.op, condition.value),
    )

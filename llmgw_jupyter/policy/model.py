"""The policy document (PolicyLayer form plus our additions) and its validation.

Pydantic checks the structure; every error is turned into ``<JSON pointer>: <rule>`` so an owner
can find the offending spot in the file, and all errors are reported at once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

Action = Literal["allow", "deny", "require_approval"]
Op = Literal[
    "eq",
    "neq",
    "in",
    "not_in",
    "lt",
    "lte",
    "gt",
    "gte",
    "regex",
    "contains",
    "exists",
    "max_length",
    "within",
]

WINDOW_NAMES: dict[str, float] = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
WINDOW_RULE = "must be second, minute, hour, day or a positive number of seconds"
DURATION_RULE = 'must be a positive number of seconds or a duration like "30s", "10m", "2h", "1d"'
DEFAULT_APPROVAL_TIMEOUT = 600.0
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATH_RE = re.compile(r"^args(\.[^.]+)+$")
_PATH_RULE = 'must be "args.<name>" with dot-separated segments, e.g. "args.working_dir"'


def _rule(message: str) -> PydanticCustomError:
    return PydanticCustomError("policy", message)


def _positive_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if number > 0 and math.isfinite(number) else None


def parse_window(value: Any) -> float:
    """A limit window in seconds: a unit name or a positive number of seconds."""
    if isinstance(value, str) and value in WINDOW_NAMES:
        return WINDOW_NAMES[value]
    number = _positive_number(value)
    if number is None:
        raise _rule(WINDOW_RULE)
    return number


def parse_duration(value: Any) -> float:
    """A duration in seconds: a positive number or ``"<n>[smhd]"``."""
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match and float(match.group(1)) > 0:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        raise _rule(DURATION_RULE)
    number = _positive_number(value)
    if number is None:
        raise _rule(DURATION_RULE)
    return number


def _check_path(value: str) -> str:
    if not _PATH_RE.match(value):
        raise _rule(_PATH_RULE)
    return value


ArgPath = Annotated[str, AfterValidator(_check_path)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Measure = Literal["calls", "tokens", "cost_usd"]
"""What a limit counts: admitted calls (a rate limit), or what the jobs it admitted used (a
budget): tokens (input + output, as the CLI reports them) or money in US dollars."""


class Limit(_Strict):
    counter: str = Field(min_length=1, max_length=200)
    window: float
    scope: Literal["grant", "global"] = "grant"
    measure: Measure = "calls"  # before ``max``: its rule depends on the measure
    max: int | float

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> float:
        return parse_window(value)

    @field_validator("max", mode="plain")
    @classmethod
    def _max(cls, value: Any, info: ValidationInfo) -> int | float:
        """Calls and tokens count whole units (>= 1); a cost may be any positive amount."""
        measure = info.data.get("measure", "calls")
        if measure == "cost_usd":
            number = _positive_number(value)
            if number is None:
                raise _rule("must be a number > 0 for measure cost_usd")
            return number
        if isinstance(value, bool) or not isinstance(value, int):
            raise _rule("must be an integer")
        if value < 1:
            raise _rule("must be >= 1")
        return value

    @property
    def is_budget(self) -> bool:
        return self.measure != "calls"


class Condition(_Strict):
    path: ArgPath
    op: Op
    value: Any = Field(default=None, validate_default=True)
    reason: str | None = None

    @field_validator("value")
    @classmethod
    def _value(cls, value: Any, info: ValidationInfo) -> Any:
        op = info.data.get("op")
        return _check_value(op, value) if op is not None else value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_value(op: str, value: Any) -> Any:
    """Reject a value that could never be compared the way ``op`` needs (caught at load)."""
    if op == "exists":
        if value is None:
            return True
        if not isinstance(value, bool):
            raise _rule("must be true or false for op exists")
        return value
    if value is None:
        raise _rule(f"is required for op {op}")
    if op in ("in", "not_in") and not isinstance(value, list):
        raise _rule(f"must be a list for op {op}")
    if op in ("lt", "lte", "gt", "gte") and not _is_number(value):
        raise _rule(f"must be a number for op {op}")
    if op == "max_length" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise _rule("must be a non-negative integer for op max_length")
    if op == "regex":
        if not isinstance(value, str):
            raise _rule("must be a string for op regex")
        try:
            re.compile(value)
        except re.error as exc:
            raise _rule(f"invalid regular expression: {exc}") from None
    if op == "within":
        dirs = [value] if isinstance(value, str) else value
        if (
            not isinstance(dirs, list)
            or not dirs
            or not all(isinstance(d, str) and d.strip() for d in dirs)
        ):
            raise _rule("must be a directory or a non-empty list of directories for op within")
        if any(not (d.startswith("/") or d.startswith("~")) for d in dirs):
            raise _rule('directories for op within must be absolute or start with "~"')
        return dirs
    return value


class Approval(_Strict):
    timeout: float = DEFAULT_APPROVAL_TIMEOUT

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float:
        return parse_duration(value)


class ToolRule(_Strict):
    action: Action = "allow"
    reason: str | None = None
    require: list[ArgPath] = Field(default_factory=list)
    deny_if: list[Condition] = Field(default_factory=list)
    arg_rules: list[Condition] = Field(default_factory=list)
    limits: list[Limit] = Field(default_factory=list)
    approval: Approval | None = None

    @field_validator("approval")
    @classmethod
    def _approval(cls, value: Approval | None, info: ValidationInfo) -> Approval | None:
        if value is not None and info.data.get("action", "require_approval") != "require_approval":
            raise _rule("only allowed with action require_approval")
        return value


class AllTools(_Strict):
    limits: list[Limit] = Field(default_factory=list)


class PolicyDocument(_Strict):
    version: str
    default: Literal["allow", "deny"] = "deny"
    hide: list[str] = Field(default_factory=list)
    all_tools: AllTools = Field(default_factory=AllTools)
    tools: dict[str, ToolRule] = Field(default_factory=dict)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> str:
        if value != "1" or not isinstance(value, str):
            raise _rule('must be "1" (a string)')
        return value


@dataclass(frozen=True)
class PolicyProblem:
    """One validation failure, as data: where (a JSON pointer) and which rule it breaks."""

    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


class PolicyValidationError(ValueError):
    """A policy document that does not validate; ``errors`` lists every failure."""

    def __init__(self, errors: list[PolicyProblem], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + "invalid policy: " + "; ".join(str(e) for e in errors))


def json_pointer(parts: tuple[int | str, ...] | list[int | str]) -> str:
    """RFC 6901 pointer for a location (``~`` and ``/`` escaped)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


_TYPE_MESSAGES = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "extra_forbidden": "unknown key",
    "missing": "is required",
}


def _message(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "policy":
        return str(error["msg"])
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {
            "greater_than_equal": ">=",
            "greater_than": ">",
            "less_than_equal": "<=",
            "less_than": "<",
        }[kind]
        return f"must be {sign} {next(iter(ctx.values()))}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    return str(error["msg"])


def validate_document(data: Any, source: str | None = None) -> PolicyDocument:
    """Validate a parsed JSON policy; raise ``PolicyValidationError`` listing every error."""
    if not isinstance(data, dict):
        raise PolicyValidationError([PolicyProblem("", "must be a JSON object")], source)
    try:
        return PolicyDocument.model_validate(data)
    except ValidationError as exc:
        errors = [PolicyProblem(json_pointer(e["loc"]), _message(e)) for e in exc.errors()]
        raise PolicyValidationError(errors, source) from None

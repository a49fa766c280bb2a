"""Errors that cross layers carry a category, so every caller can render them the same way."""

from __future__ import annotations

from enum import Enum

from pydantic import ValidationError


class ErrorCategory(str, Enum):
    """Why a job or a call failed; job records store the value."""

    SPAWN_ERROR = "spawn_error"
    CLI_ERROR = "cli_error"
    AUTH_ERROR = "auth_error"
    TIMEOUT = "timeout"
    OUTPUT_OVERFLOW = "output_overflow"
    INVALID_INPUT = "invalid_input"
    SATURATED = "saturated"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    DISK_FULL = "disk_full"  # the data dir's filesystem is full: job failed, submissions refused
    ISOLATION_ERROR = "isolation_error"  # the job's isolation boundary could not be set up
    GRANT_REVOKED = "grant_revoked"  # the caller's grant was revoked while the call ran
    LIMIT_EXCEEDED = "limit_exceeded"  # a per-caller fair-share limit of the server refused


class GatewayError(Exception):
    """A failure with a category, a human message and, for bad input, the field it concerns."""

    def __init__(self, category: ErrorCategory, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.category = category
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str | None]:
        return {"category": self.category.value, "message": self.message, "field": self.field}


class InvalidInputError(GatewayError):
    def __init__(self, field: str, rule: str) -> None:
        super().__init__(ErrorCategory.INVALID_INPUT, f"{field}: {rule}", field=field)


class SaturatedError(GatewayError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCategory.SATURATED, message)


class NotFoundError(GatewayError):
    def __init__(self, what: str) -> None:
        super().__init__(ErrorCategory.NOT_FOUND, f"{what} not found")


class ExecutableNotFoundError(GatewayError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCategory.SPAWN_ERROR, message)


class DiskFullError(GatewayError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCategory.DISK_FULL, message)


def input_error_from_validation(error: ValidationError) -> GatewayError:
    """One message naming every bad field and its rule (pydantic's report, made readable)."""
    problems: list[str] = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "arguments"
        rule = "unknown field, not accepted" if item["type"] == "extra_forbidden" else item["msg"]
        problems.append(f"{location}: {rule.removeprefix('Value error, ')}")
    first = ".".join(str(part) for part in error.errors()[0]["loc"]) if error.errors() else None
    return GatewayError(ErrorCategory.INVALID_INPUT, "; ".join(problems), field=first or None)

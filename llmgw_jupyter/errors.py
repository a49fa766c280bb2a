"""Errors that cross layers carry a category, so every caller can render them the same way."""

from __future__ import annotations

from enum import Enum

from pydantic import ValidationError


class ErrorCategory(str, Enum):
    """Why a job or a call failed. The values are user-visible (job records, REST and MCP
    error bodies, the lab panel): never rename one."""

    # -- a job's own failure (stored on the job record) --------------------------------------
    SPAWN_ERROR = "spawn_error"
    CLI_ERROR = "cli_error"
    AUTH_ERROR = "auth_error"  # the CLI could not authenticate to its model provider
    TIMEOUT = "timeout"
    OUTPUT_OVERFLOW = "output_overflow"
    ISOLATION_ERROR = "isolation_error"  # the job's isolation boundary could not be set up
    DISK_FULL = "disk_full"  # the data dir's filesystem is full: job failed, submissions refused
    # -- a refused or failed call --------------------------------------------------------------
    INVALID_INPUT = "invalid_input"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    SATURATED = "saturated"
    LIMIT_EXCEEDED = "limit_exceeded"  # a per-caller fair-share limit of the server refused
    GRANT_REVOKED = "grant_revoked"  # the caller's grant was revoked while the call ran
    POLICY_DENIED = "policy_denied"
    RATE_LIMITED = "rate_limited"  # a policy rate limit: retry after the time it names
    APPROVAL_DENIED = "approval_denied"
    APPROVAL_EXPIRED = "approval_expired"
    UNAUTHORIZED = "unauthorized"  # no usable credentials (HTTP 401)
    FORBIDDEN = "forbidden"  # credentials fine, this route refused (Jupyter auth, HTTP 403)
    UNAVAILABLE = "unavailable"  # the gateway is starting, stopped or failed to start
    POLICY_ERROR = "policy_error"  # the owner policy file did not load: fail closed
    INTERNAL = "internal"  # a bug: the message is fixed, the details are in the server log
    # -- seen by a client only -----------------------------------------------------------------
    HTTP_ERROR = "http_error"  # an HTTP refusal with no category of ours (e.g. 405, 413)
    UNREACHABLE = "unreachable"  # the gateway did not answer at all
    ERROR = "error"  # a failure that named no category


# The one HTTP status of each category (REST ``write_error``; the client maps back with
# ``category_for_status``).
HTTP_STATUS: dict[ErrorCategory, int] = {
    ErrorCategory.INVALID_INPUT: 400,
    ErrorCategory.UNAUTHORIZED: 401,
    ErrorCategory.FORBIDDEN: 403,
    ErrorCategory.POLICY_DENIED: 403,
    ErrorCategory.APPROVAL_DENIED: 403,
    ErrorCategory.APPROVAL_EXPIRED: 403,
    # The refusal concerns a grant that no longer holds, not the requester's own credentials:
    # 401 would tell the owner's browser to sign in again.
    ErrorCategory.GRANT_REVOKED: 403,
    ErrorCategory.NOT_FOUND: 404,
    ErrorCategory.CONFLICT: 409,
    ErrorCategory.RATE_LIMITED: 429,
    ErrorCategory.LIMIT_EXCEEDED: 429,  # a fair-share cap; Retry-After only when it is known
    ErrorCategory.INTERNAL: 500,
    ErrorCategory.ERROR: 500,
    ErrorCategory.HTTP_ERROR: 500,
    ErrorCategory.UNREACHABLE: 502,
    ErrorCategory.UNAVAILABLE: 503,
    ErrorCategory.POLICY_ERROR: 503,
    ErrorCategory.SATURATED: 503,
    ErrorCategory.SPAWN_ERROR: 503,
    ErrorCategory.ISOLATION_ERROR: 503,
    # A job's own failures: stored on the job, not a refusal of a call (500 if one escapes).
    ErrorCategory.CLI_ERROR: 500,
    ErrorCategory.AUTH_ERROR: 500,
    ErrorCategory.TIMEOUT: 500,
    ErrorCategory.OUTPUT_OVERFLOW: 500,
    ErrorCategory.DISK_FULL: 507,
}
assert set(HTTP_STATUS) == set(ErrorCategory)

# What a bare HTTP status (no error body of ours) means: Tornado's and Jupyter's own refusals.
_CATEGORY_OF_STATUS: dict[int, ErrorCategory] = {
    400: ErrorCategory.INVALID_INPUT,
    401: ErrorCategory.UNAUTHORIZED,
    403: ErrorCategory.FORBIDDEN,
    404: ErrorCategory.NOT_FOUND,
    405: ErrorCategory.INVALID_INPUT,
    409: ErrorCategory.CONFLICT,
    429: ErrorCategory.RATE_LIMITED,
    500: ErrorCategory.INTERNAL,
    502: ErrorCategory.UNREACHABLE,  # a proxy in between could not reach the gateway
    503: ErrorCategory.UNAVAILABLE,
    504: ErrorCategory.UNREACHABLE,
    507: ErrorCategory.DISK_FULL,
}


def category_of(value: str | ErrorCategory | None) -> ErrorCategory | None:
    """The member for a category value, or None for a value this version does not know."""
    if isinstance(value, ErrorCategory):
        return value
    try:
        return ErrorCategory(value)
    except ValueError:
        return None


def http_status(category: str | ErrorCategory | None) -> int:
    """The HTTP status of a category; an unknown one is a 500."""
    member = category_of(category)
    return HTTP_STATUS[member] if member is not None else 500


def category_for_status(status: int) -> ErrorCategory:
    """The category of an HTTP refusal that carried none of its own."""
    return _CATEGORY_OF_STATUS.get(status, ErrorCategory.HTTP_ERROR)


class GatewayError(Exception):
    """A failure with a category, a human message and, for bad input, the field it concerns.

    Raised by every layer; the REST API renders it as ``contract.ErrorBody`` with the status
    ``HTTP_STATUS`` gives (and ``Retry-After`` when the refusal knows when to try again)."""

    def __init__(
        self,
        category: ErrorCategory,
        message: str,
        *,
        field: str | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.category = category
        self.message = message
        self.field = field
        self.retry_after_seconds = retry_after_seconds

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.category]

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

"""One error taxonomy: every category the code uses is an ``ErrorCategory`` member with one HTTP
status, and the kernel client reads a bare status the way the server writes it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmgw_jupyter.errors import (
    HTTP_STATUS,
    ErrorCategory,
    GatewayError,
    category_for_status,
    category_of,
    http_status,
)

PACKAGE = Path(__file__).resolve().parents[1] / "llmgw_jupyter"
# Where a category is spelled as a string literal: error dicts, tool failures, client errors.
CATEGORY_LITERALS = [
    re.compile(r"""["']category["']\s*:\s*["']([a-z_]+)["']"""),
    re.compile(r"""\bcategory\s*=\s*["']([a-z_]+)["']"""),
    re.compile(r"""ToolResult\.(?:failure|denied)\(\s*["']([a-z_]+)["']"""),
    re.compile(r"""GatewayCallError\(\s*["']([a-z_]+)["']"""),
]
VALUES = {category.value for category in ErrorCategory}


def test_every_category_has_one_status() -> None:
    assert set(HTTP_STATUS) == set(ErrorCategory)
    assert all(400 <= status <= 599 for status in HTTP_STATUS.values())
    assert http_status("no_such_category") == 500
    assert GatewayError(ErrorCategory.RATE_LIMITED, "slow down").http_status == 429


@pytest.mark.parametrize(
    ("category", "status"),
    [
        ("invalid_input", 400),
        ("unauthorized", 401),
        ("forbidden", 403),
        ("policy_denied", 403),
        ("grant_revoked", 403),
        ("not_found", 404),
        ("conflict", 409),
        ("rate_limited", 429),
        ("limit_exceeded", 429),
        ("unavailable", 503),
        ("policy_error", 503),
        ("saturated", 503),
        ("disk_full", 507),
        ("internal", 500),
    ],
)
def test_the_documented_statuses(category: str, status: int) -> None:
    """docs/architecture.md's table of REST statuses (user-visible: never changed silently)."""
    assert http_status(category) == status


def test_a_bare_status_reads_as_the_category_the_server_writes_for_it() -> None:
    """The categories the server itself gives a bare refusal round-trip through the table."""
    for category in ("invalid_input", "unauthorized", "forbidden", "not_found", "conflict"):
        assert category_for_status(http_status(category)).value == category
    assert category_for_status(401) is ErrorCategory.UNAUTHORIZED  # not a job's auth_error
    assert category_for_status(503) is ErrorCategory.UNAVAILABLE  # not saturated
    assert category_for_status(418) is ErrorCategory.HTTP_ERROR


def test_category_values_are_kept_as_they_were() -> None:
    """Stored on job records and shown to users: a renamed value would orphan old jobs."""
    assert {
        "spawn_error", "cli_error", "auth_error", "timeout", "output_overflow", "invalid_input",
        "saturated", "not_found", "conflict", "disk_full", "isolation_error", "grant_revoked",
        "limit_exceeded",
    } <= VALUES  # fmt: skip
    assert category_of("policy_denied") is ErrorCategory.POLICY_DENIED
    assert category_of("from_a_newer_server") is None


def test_no_category_is_a_bare_string_outside_the_enum() -> None:
    """Every category literal in the package is a member's value (a new one goes in the enum)."""
    strays: list[str] = []
    seen = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for pattern in CATEGORY_LITERALS:
            for match in pattern.finditer(text):
                seen += 1
                if match.group(1) not in VALUES:
                    line = text.count("\n", 0, match.start()) + 1
                    strays.append(f"{path.relative_to(PACKAGE)}:{line}: {match.group(1)!r}")
    assert seen >= 5, "the patterns no longer find the category literals"
    assert strays == []

"""Who may run what, where: the checks a job passes before it is stored (and again at launch).

Each check raises a GatewayError that names the field or the setting to change.
"""

from __future__ import annotations

import os
from typing import Any

from llmgw_jupyter.errors import ErrorCategory, GatewayError, InvalidInputError
from llmgw_jupyter.records import ACTIVE_STATUS_VALUES
from llmgw_jupyter.runtime.config import RuntimeConfig
from llmgw_jupyter.runtime.isolation import Boundary, IsolationError


class Admission:
    """The submission rules of one runtime's configuration and isolation boundary."""

    def __init__(self, config: RuntimeConfig, boundary: Boundary) -> None:
        self.config = config
        self.boundary = boundary

    def isolated(self, caller: str) -> bool:
        return caller != "owner" or (self.config.isolation == "bwrap" and self.config.isolate_owner)

    def check_isolation(self, caller: str) -> None:
        """A job that must be isolated is refused while the boundary is off or unavailable."""
        if not self.isolated(caller):
            return
        if self.config.isolation != "bwrap":
            raise IsolationError(
                "grants' jobs only run inside the isolation boundary, which is switched off "
                "(c.LLMGatewayApp.isolation = 'off'); the owner must turn it on"
            )
        reason = self.boundary.unavailable_reason()
        if reason is not None:
            hint = (
                ""
                if caller != "owner"
                else (
                    "; the owner can run their own jobs without it "
                    "(c.LLMGatewayApp.isolate_owner_jobs = False)"
                )
            )
            raise IsolationError(f"job isolation is unavailable: {reason}{hint}")

    def check_paths(self, caller: str, args: dict[str, Any]) -> None:
        """Grants stay under the grant roots; an isolated job never works in a protected place.

        A grant without a ``working_dir`` is given the first grant root (``args`` is updated)."""
        self._check_grant_roots(caller, args)
        if self.isolated(caller):
            for field_name, paths in _paths(args):
                for path in paths:
                    self.boundary.check_path(field_name, path)

    def _check_grant_roots(self, caller: str, args: dict[str, Any]) -> None:
        """A grant works only under the owner's chosen directories (resolved, symlinks followed)."""
        if caller == "owner" or self.config.grant_roots is None:
            return
        roots = [os.path.realpath(os.path.expanduser(root)) for root in self.config.grant_roots]
        if not args.get("working_dir") and roots and os.path.isdir(roots[0]):
            args["working_dir"] = roots[0]  # a grant works in the first root by default
        for field_name, paths in _paths(args):
            for path in paths:
                real = os.path.realpath(path)
                if not any(
                    real == root or real.startswith(root.rstrip("/") + "/") for root in roots
                ):
                    raise InvalidInputError(
                        field_name,
                        f"{path} is outside the directories grants may work in "
                        f"({', '.join(roots) or 'none'}); the owner sets them with "
                        "c.LLMGatewayApp.grant_roots",
                    )

    def check_caller_share(self, caller: str, counts: dict[str, int]) -> None:
        """A grant holds at most ``max_active_per_grant`` unfinished jobs at once.

        ``counts``: the caller's jobs by status value."""
        if caller == "owner":
            return
        limit = self.config.max_active_per_grant
        active = sum(count for status, count in counts.items() if status in ACTIVE_STATUS_VALUES)
        if active >= limit:
            raise GatewayError(
                ErrorCategory.LIMIT_EXCEEDED,
                f"this caller already has {active} unfinished jobs (limit {limit} per grant, "
                "c.LLMGatewayApp.max_active_jobs_per_grant); wait for one to finish or cancel one",
            )

    def check_timeout(self, args: dict[str, Any]) -> None:
        wall = self.config.wall_timeout_seconds
        asked = args.get("timeout_seconds")
        if asked is not None and float(asked) > wall:
            raise InvalidInputError(
                "timeout_seconds",
                f"must be at most {wall:g} (the server's wall_timeout_seconds; the owner can "
                "raise c.LLMGatewayApp.wall_timeout_seconds)",
            )


def _paths(args: dict[str, Any]) -> tuple[tuple[str, list[str]], ...]:
    """The directories a job works in, by the argument that names them."""
    return (
        ("working_dir", [args.get("working_dir") or os.getcwd()]),
        ("add_dirs", args.get("add_dirs", [])),
    )

"""Who is calling, and what a handler may use while it runs."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the handlers get a runtime; the tool models never need one (magics)
    from llmgw_jupyter.runtime.manager import Runtime
    from llmgw_jupyter.tools.read_cache import ReadCache

ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]
# Grant names end up in caller keys, file names (<grant_policy_dir>/<name>.json) and per-caller
# directories: an allow list that is safe on every filesystem, case-insensitive ones included.
GRANT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Caller:
    """The notebook's owner, or a named grant given to one external agent."""

    kind: Literal["owner", "grant"]
    name: str = "owner"

    @classmethod
    def owner(cls) -> Caller:
        return cls("owner", "owner")

    @classmethod
    def grant(cls, name: str) -> Caller:
        return cls("grant", name)

    @classmethod
    def from_key(cls, key: str) -> Caller:
        return cls.owner() if key == "owner" else cls.grant(key.removeprefix("grant:"))

    @property
    def is_owner(self) -> bool:
        return self.kind == "owner"

    @property
    def key(self) -> str:
        """How jobs, audit records and rate-limit scopes name the caller."""
        return "owner" if self.is_owner else f"grant:{self.name}"


@dataclass
class ToolContext:
    runtime: Runtime
    caller: Caller
    progress: ProgressCallback | None = None
    needs_approval: bool = False
    # Set by the gateway when the call needs approval: turns a new job id into a pending approval.
    hold_for_approval: Callable[[str], Awaitable[dict[str, Any]]] | None = field(default=None)
    # Set by the gateway when the call's budgets must be charged: told each new job's id.
    job_submitted: Callable[[str], None] | None = field(default=None)
    # Each provider's small arguments, kept in light job views (see ToolRegistry.light_arg_keys).
    light_arg_keys: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # Where read tools may keep their answers while the store is unchanged (the gateway's).
    reads: ReadCache | None = None

    async def report(self, progress: float, total: float | None, message: str | None) -> None:
        if self.progress is not None:
            await self.progress(progress, total, message)

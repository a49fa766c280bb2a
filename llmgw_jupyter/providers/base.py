"""What the runtime needs from a coding-agent CLI; one module per CLI implements it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmgw_jupyter.errors import ErrorCategory
from llmgw_jupyter.records import Usage

__all__ = ["Command", "LaunchContext", "Mounts", "ParsedEvent", "Provider", "StreamParser"]


@dataclass(frozen=True)
class LaunchContext:
    """Who a run is for and how it runs; per-caller provider state lives in ``state_dir``."""

    caller: str
    isolated: bool
    state_dir: Path  # <data dir>/callers/<caller>, mode 0700


@dataclass
class Mounts:
    """What one job may see besides the system: declared by the provider, checked here."""

    writable: list[str] = field(default_factory=list)  # same path inside, read-write
    read_only: list[str] = field(default_factory=list)  # same path inside, read-only
    private: dict[str, str] = field(default_factory=dict)  # inside path -> real dir, read-write


@dataclass
class Command:
    """How to start one run: never a shell; the prompt travels on stdin."""

    argv: list[str]
    stdin: bytes | None
    cwd: str | None
    env: dict[str, str] = field(default_factory=dict)  # added to the job's allow-listed env
    mounts: Mounts = field(default_factory=Mounts)  # what the CLI needs inside the boundary
    env_names: tuple[str, ...] = ()  # more variables of the server's env the CLI needs


@dataclass
class ParsedEvent:
    type: str
    summary: str
    data: dict[str, Any]


@dataclass
class Verdict:
    """How a finished run ended, in the provider's judgement."""

    succeeded: bool
    category: ErrorCategory | None = None
    message: str | None = None


class StreamParser(Protocol):
    """Reads the CLI's stdout line by line as it arrives and keeps what the job record needs."""

    session_id: str | None
    final_message: str | None
    usage: Usage | None
    error_message: str | None

    def feed(self, line: bytes) -> list[ParsedEvent]: ...

    def verdict(self, exit_code: int | None, stderr_tail: str) -> Verdict: ...


class Provider(Protocol):
    name: str

    def check_ready(self) -> None:
        """Raise a GatewayError that says how to fix it when the CLI cannot be started."""
        ...

    def validate(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """Check and normalise arguments; raise InvalidInputError naming the field."""
        ...

    def protected_paths(self) -> list[str]:
        """The owner's own state of this CLI (credentials, history): masked from every job."""
        ...

    def build_command(
        self, kind: str, args: dict[str, Any], job_dir: Path, context: LaunchContext
    ) -> Command: ...

    def new_parser(self) -> StreamParser: ...

"""What the runtime needs from a coding-agent CLI; one module per CLI implements it."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import AfterValidator, BaseModel

from llmgw_jupyter.errors import ErrorCategory, ExecutableNotFoundError
from llmgw_jupyter.records import Usage

__all__ = [
    "Command",
    "LaunchContext",
    "Mounts",
    "ParsedEvent",
    "Provider",
    "ProviderClass",
    "ProviderConfigError",
    "ProviderSettings",
    "SessionId",
    "StreamParser",
    "ToolSpec",
    "clip_event",
    "clip_text",
    "find_cli",
    "install_root",
]

_SESSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _session_id(value: str) -> str:
    if not _SESSION_RE.match(value):
        raise ValueError("session_id must be letters, digits, . _ - and not start with '-'")
    return value


# A CLI's session id as callers pass it: never an option, never a path.
SessionId = Annotated[str, AfterValidator(_session_id)]


class ProviderConfigError(ValueError):
    """A provider's configuration is wrong: says which provider, which setting and why."""

    def __init__(self, provider: str, setting: str, message: str) -> None:
        super().__init__(f"provider {provider!r}, setting {setting!r}: {message}")
        self.provider = provider
        self.setting = setting


@dataclass(frozen=True)
class ProviderSettings:
    """One provider's configuration: where its CLI is, its own home, and options of its own."""

    path: str | None = None  # the CLI executable; None: the provider's env variable, then PATH
    home: str | None = None  # the CLI's own state dir (Codex: CODEX_HOME); None: its default
    options: Mapping[str, Any] = field(default_factory=dict)  # provider-specific settings
    class_ref: str | None = None  # "module:Class"; None: the installed provider of that name
    enabled: bool = True  # False: not built at all (e.g. an installed plugin that is unwanted)

    def check_options(self, provider: str, known: Collection[str]) -> None:
        """Refuse options the provider does not know (a typo must not pass silently)."""
        for name in self.options:
            if name not in known:
                raise ProviderConfigError(
                    provider,
                    f"options.{name}",
                    f"unknown option (known: {', '.join(sorted(known)) or 'none'})",
                )


@dataclass(frozen=True)
class ToolSpec:
    """What the tool layer needs to offer a CLI as tools: ``<name>_request`` (waits),
    ``<name>_request_async`` and ``<name>_fork_session`` are built from it."""

    label: str  # "Codex": tool titles and field descriptions
    request_noun: str  # "an OpenAI Codex CLI request": the tools' descriptions
    command: str  # "codex exec": named in the waiting tool's description
    args_model: type[BaseModel]  # the request's own arguments (prompt, model, ...), extra=forbid
    light_arg_keys: tuple[str, ...]  # arguments small enough for every job view
    session_id: Any = SessionId  # the type of one of its session ids
    can_fork: bool = True  # False: no fork tool


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
    """One coding-agent CLI: how to check, validate, launch and read it, and its tools."""

    name: str  # the registry name and the tools' prefix ("codex" -> codex_request_async)
    tool_spec: ToolSpec

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


class ProviderClass(Protocol):
    """What the registry imports ("module:Class"): builds a provider from its settings."""

    name: str
    tool_spec: ToolSpec

    def from_settings(self, settings: ProviderSettings) -> Provider:
        """Raise ProviderConfigError naming the setting when the settings are wrong."""
        ...


# -- helpers every CLI module uses -------------------------------------------------------------

EVENT_STRING_CHARS = 4_000  # longest string kept in a stored event


_FOUND_CLIS: dict[tuple[str | None, str | None, str, str], str] = {}
_MAX_FOUND_CLIS = 64


def find_cli(
    explicit: str | None,
    *,
    env_var: str,
    command: str,
    label: str,
    setting: str,
    install_hint: str,
    install_noun: str = "it",
) -> str:
    """Configuration, then ``$<env_var>``, then ``PATH``; a clear error otherwise.

    ``label`` names the CLI ("Codex CLI"), ``setting`` the configuration that points at it and
    ``install_hint`` how to install it: the errors say what to fix. Every job's submission asks
    (a ``PATH`` walk of a dozen ``stat`` calls): a path found before is answered again while it
    is still an executable and the configuration, variable and ``PATH`` it came from are the
    same (one ``access`` call); a CLI that was not found is looked for again every time.
    """
    from_env = os.environ.get(env_var)
    key = (explicit, from_env, os.environ.get("PATH", ""), command)
    found = _FOUND_CLIS.get(key)
    if found is not None and os.access(found, os.X_OK):
        return found
    found = _find_cli(
        explicit,
        from_env,
        env_var=env_var,
        command=command,
        label=label,
        setting=setting,
        install_hint=install_hint,
        install_noun=install_noun,
    )
    if len(_FOUND_CLIS) >= _MAX_FOUND_CLIS:
        _FOUND_CLIS.clear()
    _FOUND_CLIS[key] = found
    return found


def _find_cli(
    explicit: str | None,
    from_env: str | None,
    *,
    env_var: str,
    command: str,
    label: str,
    setting: str,
    install_hint: str,
    install_noun: str,
) -> str:
    for candidate, origin in ((explicit, "configuration"), (from_env, env_var)):
        if candidate:
            resolved = shutil.which(candidate) or (
                candidate if os.access(candidate, os.X_OK) else None
            )
            if resolved is None:
                raise ExecutableNotFoundError(
                    f"{label} not found at {candidate!r} (from {origin}): no such executable "
                    f"file; fix that setting, or install {install_noun} with {install_hint}"
                )
            return resolved
    found = shutil.which(command)
    if found:
        return found
    raise ExecutableNotFoundError(
        f"{label} not found: set {setting} or the {env_var} environment variable, or install "
        f"it with {install_hint}"
    )


def install_root(executable: str) -> str:
    """What must be visible to run an npm-installed CLI: its ``node_modules`` (launcher, native
    binary in a platform package, bundled helpers), or the directory of a standalone binary."""
    real = Path(os.path.realpath(executable))
    for parent in real.parents:
        if parent.name == "node_modules":
            return str(parent)
    return str(real.parent)


def clip_text(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters (an event's summary)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


MAX_EVENT_LIST_ITEMS = 200  # longest list kept in a stored event


def clip_event(value: Any, limit: int = EVENT_STRING_CHARS) -> Any:
    """Keep stored events small; the raw line stays whole in the job's stdout file.

    Strings over ``limit`` characters are cut (saying how much) and lists over
    ``MAX_EVENT_LIST_ITEMS`` items shortened; a container with nothing to cut is returned as it
    is, not copied (a Claude ``init`` event lists every tool, command and plugin: copying each
    of its containers was a tenth of a job's parsing)."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"… [{len(value) - limit} more]"
    if isinstance(value, dict):
        changed: dict[Any, Any] | None = None
        for key, item in value.items():
            clipped = clip_event(item, limit)
            if clipped is not item:
                if changed is None:
                    changed = dict(value)
                changed[key] = clipped
        return value if changed is None else changed
    if isinstance(value, list):
        kept = value[:MAX_EVENT_LIST_ITEMS] if len(value) > MAX_EVENT_LIST_ITEMS else value
        items: list[Any] | None = None if kept is value else list(kept)
        for index, item in enumerate(kept):
            clipped = clip_event(item, limit)
            if clipped is not item:
                if items is None:
                    items = list(kept)
                items[index] = clipped
        return value if items is None else items
    return value

"""A provider for tests that are not about Codex: the tiny ``fake_cli`` instead of a real CLI.

Registered through configuration only, the way a third-party CLI would be::

    c.LLMGatewayApp.providers = {
        "fake": {"class": "llmgw_jupyter.testing.fake_provider:FakeProvider"}
    }

which gives the tools ``fake_request``, ``fake_request_async`` and ``fake_fork_session``. Its
answers, failures, delays, progress events and usage are chosen by knobs in the prompt (see
``fake_cli``). Settings: ``path`` the fake CLI script (default: ``fake_cli.py`` beside this
module), ``home`` where the owner's sessions live (default: under the data dir, like a grant's);
options ``delay_seconds`` (every answer waits this long) and ``ready_error`` (the CLI "is
missing": every job is refused with this message, as a missing Codex would be).

``FakeCodexProvider`` is the same CLI behind Codex's name, tools and argument validation, for
tests of surfaces that name Codex (REST ``POST jobs``, the magics) but are not about Codex::

    c.LLMGatewayApp.providers = {
        "codex": {"class": "llmgw_jupyter.testing.fake_provider:FakeCodexProvider"}
    }
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmgw_jupyter.errors import (
    ErrorCategory,
    ExecutableNotFoundError,
)
from llmgw_jupyter.providers.args import (
    MAX_PROMPT_CHARS,
    IdempotencyKey,
    ModelSlug,
    TimeoutSeconds,
    parse_args,
    resolve_paths,
)
from llmgw_jupyter.providers.base import (
    Command,
    LaunchContext,
    Mounts,
    ParsedEvent,
    ProviderConfigError,
    ProviderSettings,
    SessionId,
    ToolSpec,
    Verdict,
)
from llmgw_jupyter.providers.codex import CodexProvider
from llmgw_jupyter.records import Usage
from llmgw_jupyter.testing import fake_cli

INSIDE_HOME = "/llmgw/fake-home"


class FakeArgs(BaseModel):
    """Arguments of a fake request."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="What to answer; [fake:...] knobs choose delays, failures, events, usage.",
    )
    model: ModelSlug | None = Field(default=None, description="Model name the fake reports.")
    working_dir: str | None = Field(
        default=None, max_length=4096, description="Directory the fake runs in (must exist)."
    )
    timeout_seconds: TimeoutSeconds = None
    idempotency_key: IdempotencyKey = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        if not value.strip() or "\x00" in value:
            raise ValueError("prompt must not be blank or contain NUL characters")
        return value


class FakeResumeArgs(FakeArgs):
    session_id: SessionId = Field(description="Session to continue or fork.")


class FakeProvider:
    """Implements ``Provider`` for ``fake_cli``; built by the registry from its settings."""

    name = "fake"
    tool_spec = ToolSpec(
        label="Fake",
        request_noun="a fake CLI request",
        command="fake_cli",
        args_model=FakeArgs,
        light_arg_keys=("model", "working_dir", "session_id", "timeout_seconds"),
    )

    def __init__(
        self,
        script: str | None = None,
        *,
        home: str | None = None,
        delay_seconds: float = 0.0,
        ready_error: str | None = None,
    ) -> None:
        self.script = str(Path(script).resolve()) if script else fake_cli.__file__
        self.home = str(Path(home).expanduser().resolve()) if home else None
        self.delay_seconds = delay_seconds
        self.ready_error = ready_error

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> FakeProvider:
        settings.check_options(cls.name, {"delay_seconds", "ready_error"})
        delay = settings.options.get("delay_seconds", 0.0)
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0:
            raise ProviderConfigError(cls.name, "options.delay_seconds", "must be a number >= 0")
        ready_error = settings.options.get("ready_error")
        if ready_error is not None and not isinstance(ready_error, str):
            raise ProviderConfigError(cls.name, "options.ready_error", "must be a string")
        return cls(
            settings.path, home=settings.home, delay_seconds=float(delay), ready_error=ready_error
        )

    def check_ready(self) -> None:
        if self.ready_error is not None:
            raise ExecutableNotFoundError(self.ready_error)
        if not Path(self.script).is_file():
            raise ExecutableNotFoundError(f"fake CLI not found at {self.script!r}")

    def validate(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        parsed = parse_args(FakeArgs if kind == "exec" else FakeResumeArgs, args)
        return resolve_paths(parsed.model_dump(exclude_none=True))

    def protected_paths(self) -> list[str]:
        return [self.home] if self.home else []

    def build_command(
        self, kind: str, args: dict[str, Any], job_dir: Path, context: LaunchContext
    ) -> Command:
        home = Path(self.home) if self.home and context.caller == "owner" else None
        home = home or context.state_dir / "fake-home"
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        mounts = Mounts(read_only=[sys.base_prefix, sys.prefix, str(Path(self.script).parent)])
        home_arg = str(home)
        if context.isolated:
            mounts.private[INSIDE_HOME] = str(home)
            home_arg = INSIDE_HOME
        argv = [sys.executable, "-I", "-S", self.script, "--home", home_arg]
        if kind in ("resume", "fork"):
            argv += [f"--{kind}", args["session_id"]]
        if args.get("model"):
            argv += ["--model", args["model"]]
        if self.delay_seconds:
            argv += ["--delay", str(self.delay_seconds)]
        return Command(
            argv=argv, stdin=args["prompt"].encode(), cwd=args.get("working_dir"), mounts=mounts
        )

    def new_parser(self) -> FakeStreamParser:
        return FakeStreamParser()


class FakeCodexProvider(CodexProvider):
    """Codex's name, tools and argument checks; ``fake_cli`` runs the jobs (its knobs, its
    events ``fake.*``, its answers ``echo: <prompt>``). ``home`` keeps the owner's sessions (and
    is protected like a Codex home); ``path`` is the fake CLI script (default: the bundled one).
    """

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> FakeCodexProvider:
        settings.check_options(cls.name, {"delay_seconds", "ready_error"})
        return cls(FakeProvider.from_settings(settings))

    def __init__(self, fake: FakeProvider | None = None) -> None:
        self.fake = fake or FakeProvider()
        super().__init__(self.fake.script, codex_home=self.fake.home)

    def check_ready(self) -> None:
        self.fake.check_ready()

    def build_command(
        self, kind: str, args: dict[str, Any], job_dir: Path, context: LaunchContext
    ) -> Command:
        return self.fake.build_command(kind, args, job_dir, context)

    def new_parser(self) -> FakeStreamParser:  # type: ignore[override]
        return FakeStreamParser()


class FakeStreamParser:
    """Reads ``fake_cli``'s JSON lines (its own format, not Codex's)."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.final_message: str | None = None
        self.usage: Usage | None = None
        self.error_message: str | None = None

    def feed(self, line: bytes) -> list[ParsedEvent]:
        try:
            event = json.loads(line)
        except ValueError:
            return []
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return []
        kind = event["type"]
        if kind == "session":
            self.session_id = str(event.get("id") or "") or None
            summary = f"session {self.session_id}"
        elif kind == "progress":
            summary = str(event.get("text") or "progress")
        elif kind == "answer":
            self.final_message = str(event.get("text") or "")
            usage = event.get("usage") or {}
            self.usage = Usage(usage.get("input_tokens"), None, usage.get("output_tokens"), None)
            summary = f"answer: {self.final_message}"
        elif kind == "error":
            self.error_message = str(event.get("message") or "error")
            summary = f"error: {self.error_message}"
        else:
            summary = kind
        return [ParsedEvent(type=f"fake.{kind}", summary=summary[:300], data=event)]

    def verdict(self, exit_code: int | None, stderr_tail: str) -> Verdict:
        if exit_code == 0 and self.final_message is not None:
            return Verdict(succeeded=True)
        message = self.error_message or (
            f"fake_cli exited with code {exit_code}: {stderr_tail.strip()[-300:]}"
        )
        return Verdict(succeeded=False, category=ErrorCategory.CLI_ERROR, message=message)

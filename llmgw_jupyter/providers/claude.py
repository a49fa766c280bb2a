"""Claude Code provider: ``claude -p --output-format stream-json --verbose``, prompt on stdin.

Facts this relies on (Claude Code 2.1.328, see docs/claude-code.md): stream-json needs
``--verbose``; ``--resume <uuid>`` continues a session and ``--fork-session`` copies it into a new
one without touching the parent's transcript; a non-UUID ``--resume`` value is looked up as a
session *title*, so session ids are checked to be UUIDs; success is a ``result`` event with
``is_error: false`` (and, with ``--json-schema``, a non-null ``structured_output``); on resume and
fork ``total_cost_usd`` is cumulative over the whole session, so this run's cost is the sum of
``model_usage_since_last_result[*].costUSD``.

Callers choose only typed, validated arguments: there is no free-form flag, no settings file, no
MCP config and no environment from callers. The gateway's own settings come last: a private
per-caller ``CLAUDE_CONFIG_DIR`` whose ``settings.json`` the gateway rewrites on every run,
``--setting-sources user`` (a working dir's ``.claude/settings*.json`` cannot add hooks, change
permissions or endpoints) and ``--strict-mcp-config`` (no MCP servers from ``.mcp.json``).

The commands Claude runs (its ``Bash`` tool) would inherit claude's whole environment, API key
included. So the key never is in it: claude gets it from an ``apiKeyHelper`` that reads a private
key file, and the commands run in Claude's own sandbox (bubblewrap + socat), which cannot read
that file. What stays exposed is in docs/claude-code.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from llmgw_jupyter.errors import (
    ErrorCategory,
    input_error_from_validation,
)
from llmgw_jupyter.providers.args import (
    AddDirs,
    IdempotencyKey,
    OutputSchema,
    Prompt,
    TimeoutSeconds,
    WorkingDir,
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
    ToolSpec,
    Verdict,
    clip_event,
    clip_text,
    find_cli,
    install_root,
)
from llmgw_jupyter.records import Usage

__all__ = [
    "CLAUDE_NPM_PACKAGE",
    "CLAUDE_PATH_ENV",
    "GATEWAY_ENV",
    "KEY_FILE",
    "ClaudeArgs",
    "ClaudeProvider",
    "ClaudeResumeArgs",
    "ClaudeSessionId",
    "ClaudeStreamParser",
    "find_claude",
    "gateway_settings",
]

CLAUDE_PATH_ENV = "LLMGW_CLAUDE_PATH"
CLAUDE_NPM_PACKAGE = "@anthropic-ai/claude-code@2.1.328"
SUMMARY_CHARS = 300
MAX_TOOL_PATTERNS = 32
# The caller's Claude config dir inside the isolation boundary (outside the per-job /tmp).
INSIDE_CONFIG_DIR = "/llmgw/claude-config"
# Inside the boundary /tmp is a tmpfs of the job's own; outside it a short per-caller dir (the
# CLI puts a Unix socket there, whose path must stay under 108 bytes).
INSIDE_TMPDIR = "/tmp/claude"
STRUCTURED_TOOL = "StructuredOutput"  # the tool ``--json-schema`` adds (seen in init.tools)

# Permission modes a caller may pick: ``bypassPermissions`` (and with it
# ``--dangerously-skip-permissions``) never; the others only ever refuse more or ask (and asking
# is refusing in a headless run). ``manual`` is 2.1.328's name for ``default``.
PermissionMode = Literal["default", "manual", "acceptEdits", "plan", "dontAsk", "auto"]
# Variables of the server's environment a Claude run may see besides the runtime's base set:
# the owner's key and endpoint, never a caller's.
CREDENTIAL_ENV = ("ANTHROPIC_BASE_URL",)
KEY_ENV = "ANTHROPIC_API_KEY"  # read from the server's environment, handed over in a file
KEY_FILE = "gateway-api-key"  # in the private config dir; unreadable to sandboxed commands
# Set by the gateway on every run, after everything else: callers cannot change these.
GATEWAY_ENV = {
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}


def gateway_settings(key_file: str | None, *, isolated: bool, sandbox: bool) -> dict[str, Any]:
    """The private config dir's settings.json, rewritten before every run (whatever a previous
    run's commands wrote there is gone).

    ``sandbox``: the commands Claude runs go through Claude's own sandbox, with no way out
    (``allowUnsandboxedCommands: false``) and no change to what needs permission
    (``autoAllowBashIfSandboxed: false``); it cannot read the key file, and ``ANTHROPIC_API_KEY``
    is unset for it. Inside the gateway's boundary Claude's sandbox cannot mount a /proc of its
    own (nested bubblewrap), so it keeps the boundary's, which shows only this job's processes;
    outside the boundary it gets a fresh one (the weaker mode would show every process of the
    user there).
    """
    settings: dict[str, Any] = {"disableAllHooks": True}
    if key_file is not None:
        settings["apiKeyHelper"] = f"cat {shlex.quote(key_file)}"
    if sandbox:
        settings["sandbox"] = {
            "enabled": True,
            "enableWeakerNestedSandbox": isolated,
            "allowUnsandboxedCommands": False,
            "autoAllowBashIfSandboxed": False,
            "filesystem": {"denyRead": [key_file] if key_file else []},
            "credentials": {"envVars": [{"name": KEY_ENV, "mode": "deny"}]},
        }
    return settings


_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/\[\]-]{0,127}$")
# ``Name`` or ``Name(content)``: the CLI splits a rule list on commas and spaces outside
# parentheses, so neither a comma nor a parenthesis may appear inside; nothing may follow ``)``.
_TOOL_PATTERN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,127}(\([^(),\x00-\x1f\x7f]{1,256}\))?$")


def _uuid(value: str) -> str:
    try:
        parsed = uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise ValueError(
            "session_id must be a UUID (Claude looks other values up as session titles)"
        ) from None
    if len(value) != 36:
        raise ValueError("session_id must be a UUID in its 36-character form")
    return str(parsed)


# A Claude Code session id: always a canonical, lower-case UUID.
ClaudeSessionId = Annotated[str, AfterValidator(_uuid)]


def _tool_patterns(value: list[str]) -> list[str]:
    for item in value:
        if not _TOOL_PATTERN_RE.match(item):
            raise ValueError(
                f"{item[:80]!r} is not a tool name or pattern: use Name or Name(pattern), e.g. "
                "'Bash', 'Bash(git log *)', 'Read'; no commas, nested parentheses or control "
                "characters, at most 128 characters of name and 256 of pattern"
            )
    return value


class ClaudeArgs(BaseModel):
    """Arguments of a Claude Code request: the one schema behind MCP, REST and the magics."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    prompt: Prompt = Field(description="What Claude should do.")
    model: str | None = Field(default=None, description="Model name, e.g. claude-sonnet-4-5.")
    permission_mode: PermissionMode = Field(
        default="default",
        description="Claude's permission mode (never bypassPermissions); tool uses that would "
        "need approval are refused in a headless run.",
    )
    allowed_tools: list[str] = Field(
        default_factory=list,
        max_length=MAX_TOOL_PATTERNS,
        description="Tools (or patterns such as 'Bash(git log *)') allowed without asking.",
    )
    disallowed_tools: list[str] = Field(
        default_factory=list,
        max_length=MAX_TOOL_PATTERNS,
        description="Tools (or patterns) removed from the session.",
    )
    max_turns: int | None = Field(
        default=None, ge=1, le=1000, description="Stop after this many agent turns."
    )
    working_dir: WorkingDir | None = Field(
        default=None, description="Directory Claude works in (must exist)."
    )
    add_dirs: AddDirs = Field(default_factory=list, description="Extra directories Claude may use.")
    output_schema: OutputSchema | None = Field(
        default=None, description="JSON Schema the final answer must follow (--json-schema)."
    )
    timeout_seconds: TimeoutSeconds = None
    idempotency_key: IdempotencyKey = None

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        if value is not None and not _MODEL_RE.match(value):
            raise ValueError("model must be a name of letters, digits and . _ : / - [ ] (max 128)")
        return value

    @field_validator("allowed_tools", "disallowed_tools")
    @classmethod
    def _tools(cls, value: list[str]) -> list[str]:
        return _tool_patterns(value)


class ClaudeResumeArgs(ClaudeArgs):
    session_id: ClaudeSessionId = Field(description="Claude Code session id (a UUID).")


_INSTALL_HINT = (
    f"`npm install --prefix .claude-cli {CLAUDE_NPM_PACKAGE}` (scripts/bootstrap.sh does) and "
    "point LLMGW_CLAUDE_PATH at .claude-cli/node_modules/.bin/claude"
)


def find_claude(explicit: str | None = None) -> str:
    """Configuration, then ``$LLMGW_CLAUDE_PATH``, then ``PATH``; a clear error otherwise."""
    return find_cli(
        explicit,
        env_var=CLAUDE_PATH_ENV,
        command="claude",
        label="Claude Code CLI",
        setting="the claude provider's 'path'",
        install_hint=_INSTALL_HINT,
    )


LIGHT_ARG_KEYS = (
    "model",
    "permission_mode",
    "allowed_tools",
    "disallowed_tools",
    "max_turns",
    "working_dir",
    "add_dirs",
    "session_id",
    "timeout_seconds",
)


class ClaudeProvider:
    """Builds Claude Code command lines and parses its stream-json output."""

    name = "claude"
    tool_spec = ToolSpec(
        label="Claude",
        request_noun="a Claude Code CLI request",
        command="claude -p",
        args_model=ClaudeArgs,
        light_arg_keys=LIGHT_ARG_KEYS,
        session_id=ClaudeSessionId,
    )

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> ClaudeProvider:
        """``path`` is the claude executable; ``home`` is ignored (each caller gets a private
        config dir). Options: ``base_url`` (ANTHROPIC_BASE_URL, e.g. a test's mock) and
        ``command_sandbox`` (default true: commands run in Claude's sandbox; false only where
        bubblewrap or socat cannot run, and then they see what claude sees)."""
        settings.check_options(cls.name, {"base_url", "command_sandbox"})
        base_url = settings.options.get("base_url")
        if base_url is not None and (
            not isinstance(base_url, str) or not re.match(r"^https?://[^\s]{1,2000}$", base_url)
        ):
            raise ProviderConfigError(cls.name, "options.base_url", "must be an http(s) URL")
        sandbox = settings.options.get("command_sandbox", True)
        if not isinstance(sandbox, bool):
            raise ProviderConfigError(cls.name, "options.command_sandbox", "must be true or false")
        return cls(settings.path, base_url=base_url, command_sandbox=sandbox)

    def __init__(
        self,
        executable: str | None = None,
        *,
        base_url: str | None = None,
        command_sandbox: bool = True,
    ) -> None:
        self._explicit = executable
        self.base_url = base_url
        self.command_sandbox = command_sandbox

    def executable(self) -> str:
        return find_claude(self._explicit)

    def check_ready(self) -> None:
        self.executable()

    def validate(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        parsed = parse_args(ClaudeArgs if kind == "exec" else ClaudeResumeArgs, args)
        return resolve_paths(parsed.model_dump(exclude_none=True, exclude_defaults=False))

    def protected_paths(self) -> list[str]:
        """The owner's own Claude state (``~/.claude``, ``~/.claude.json``, or the server's
        ``$CLAUDE_CONFIG_DIR``): never visible to a job."""
        paths = [str(Path.home() / ".claude"), str(Path.home() / ".claude.json")]
        configured = os.environ.get("CLAUDE_CONFIG_DIR")
        if configured:
            paths.append(str(Path(configured).expanduser()))
        return paths

    def build_command(
        self, kind: str, args: dict[str, Any], job_dir: Path, context: LaunchContext
    ) -> Command:
        # Checked again at start: stored arguments must still be what validation accepts.
        model = ClaudeArgs if kind == "exec" else ClaudeResumeArgs
        try:
            model.model_validate(args)
        except ValidationError as error:
            raise input_error_from_validation(error) from None
        executable = self.executable()
        argv = [executable, "-p", "--output-format", "stream-json", "--verbose"]
        if args.get("model"):
            argv += ["--model", args["model"]]
        if args.get("max_turns") is not None:
            argv += ["--max-turns", str(int(args["max_turns"]))]
        if args.get("allowed_tools"):
            argv += ["--allowedTools", *args["allowed_tools"]]
        if args.get("disallowed_tools"):
            argv += ["--disallowedTools", *args["disallowed_tools"]]
        add_dirs: list[str] = args.get("add_dirs", [])
        if add_dirs:
            argv += ["--add-dir", *add_dirs]
        if args.get("output_schema") is not None:
            argv += ["--json-schema", json.dumps(args["output_schema"], separators=(",", ":"))]
        if kind in ("resume", "fork"):
            argv += ["--resume", args["session_id"]]
            if kind == "fork":
                argv.append("--fork-session")
        # The gateway's settings come last: the permission mode is re-checked above, settings
        # come only from the private config dir, MCP servers from nowhere.
        argv += [
            "--permission-mode",
            args.get("permission_mode", "default"),
            "--setting-sources",
            "user",
            "--strict-mcp-config",
            "--",
        ]
        mounts = Mounts(writable=list(add_dirs), read_only=[install_root(executable)])
        config_dir = self._config_dir_for(context)
        inside_config = INSIDE_CONFIG_DIR if context.isolated else str(config_dir)
        has_key = _write_key(config_dir / KEY_FILE, os.environ.get(KEY_ENV))
        settings = gateway_settings(
            f"{inside_config}/{KEY_FILE}" if has_key else None,
            isolated=context.isolated,
            sandbox=self.command_sandbox,
        )
        write_private(config_dir / "settings.json", json.dumps(settings, indent=2))
        env: dict[str, str] = {}
        if self.base_url:
            env["ANTHROPIC_BASE_URL"] = self.base_url
        if context.isolated:
            mounts.private[INSIDE_CONFIG_DIR] = str(config_dir)
            env["CLAUDE_CONFIG_DIR"] = INSIDE_CONFIG_DIR
            env["CLAUDE_CODE_TMPDIR"] = INSIDE_TMPDIR
        else:
            env["CLAUDE_CONFIG_DIR"] = str(config_dir)
            env["CLAUDE_CODE_TMPDIR"] = str(_short_tmpdir(context.state_dir))
        env.update(GATEWAY_ENV)
        return Command(
            argv=argv,
            stdin=args["prompt"].encode(),
            cwd=args.get("working_dir"),
            env=env,
            mounts=mounts,
            env_names=CREDENTIAL_ENV,
        )

    def _config_dir_for(self, context: LaunchContext) -> Path:
        """Each caller (the owner too) has a config dir of its own under its state dir."""
        return _private_dir(context.state_dir / "claude-config")

    def new_parser(self) -> ClaudeStreamParser:
        return ClaudeStreamParser()


def _write_key(path: Path, key: str | None) -> bool:
    """The server's API key for the apiKeyHelper (0600), or no file when there is none."""
    if key and "\n" not in key and "\x00" not in key:
        write_private(path, key + "\n")
        return True
    path.unlink(missing_ok=True)
    return False


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _short_tmpdir(state_dir: Path) -> Path:
    """A private temp dir per caller with a short path: the CLI makes a Unix socket in it."""
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:16]
    return _private_dir(Path(tempfile.gettempdir()) / f"llmgw-claude-{os.getuid()}-{digest}")


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, whatever the umask (replacing a symlink).

    A regular 0600 file that already holds exactly ``text`` is left alone: rewriting it with a
    truncating open waits for the previous write to reach the disk (milliseconds on ext4, on
    the event loop, for every job). Anything else (other content, mode or a symlink) is
    replaced, so whatever a job left there is gone either way."""
    if path.is_symlink():
        path.unlink()
    elif _holds_exactly(path, text):
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def _holds_exactly(path: Path, text: str) -> bool:
    """A regular file of ours, mode 0600, whose content is ``text`` (read without following a
    link; a file we cannot read counts as different)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or stat.S_IMODE(info.st_mode) != 0o600:
            return False
        if info.st_uid != os.getuid() or info.st_size != len(text.encode("utf-8")):
            return False
        return handle.read() == text.encode("utf-8")


class ClaudeStreamParser:
    """State of one ``claude -p --output-format stream-json`` stream, fed line by line.

    ``cost_usd`` is this run's cost (not the session's cumulative ``total_cost_usd``), also
    set on ``usage`` once the ``result`` arrives.
    """

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.final_message: str | None = None
        self.usage: Usage | None = None
        self.error_message: str | None = None
        self.cost_usd: float | None = None
        self.result_seen = False
        self.is_error = False
        self.expects_structured = False
        self.structured_output: Any = None
        self.api_error_status: int | None = None
        self._messages_counted: set[str] = set()
        self._progress = Usage(0, 0, 0, None)

    def feed(self, line: bytes) -> list[ParsedEvent]:
        text = line.strip()
        if not text.startswith(b"{"):
            return []
        try:
            event = json.loads(text)
        except ValueError:
            return []
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return []
        kind: str = event["type"]
        subtype = event.get("subtype")
        name = f"{kind}.{subtype}" if isinstance(subtype, str) and subtype else kind
        summary = self._apply(kind, event)
        return [
            ParsedEvent(
                type=name, summary=clip_text(summary, SUMMARY_CHARS), data=clip_event(event)
            )
        ]

    def _apply(self, kind: str, event: dict[str, Any]) -> str:
        if kind == "system":
            return self._system(event)
        if kind == "assistant":
            return self._assistant(event)
        if kind == "user":
            return _user_summary(event)
        if kind == "result":
            return self._result(event)
        return kind

    def _system(self, event: dict[str, Any]) -> str:
        subtype = event.get("subtype")
        if subtype == "init":
            self.session_id = _str_or_none(event.get("session_id")) or self.session_id
            tools = event.get("tools")
            self.expects_structured = isinstance(tools, list) and STRUCTURED_TOOL in tools
            return f"session {self.session_id} · model {event.get('model') or '?'}"
        if subtype == "permission_denied":
            return f"permission denied: {event.get('tool_name') or '?'}: {event.get('message')}"
        message = event.get("message")
        return f"{subtype or 'system'}: {message}" if message else str(subtype or "system")

    def _assistant(self, event: dict[str, Any]) -> str:
        message = event.get("message")
        if not isinstance(message, dict):
            return "assistant"
        message_id = message.get("id")
        usage = message.get("usage")
        counted = message_id in self._messages_counted  # usage repeats on every block
        if isinstance(message_id, str) and isinstance(usage, dict) and not counted:
            self._messages_counted.add(message_id)
            self._add_progress(usage)
        parts = []
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                parts.append(f"message: {block.get('text') or ''}")
            elif block.get("type") == "tool_use":
                parts.append(f"tool {block.get('name') or '?'}: {_tool_input(block.get('input'))}")
            elif block.get("type") == "thinking":
                parts.append("thinking")
        return " · ".join(parts) or "assistant"

    def _add_progress(self, usage: dict[str, Any]) -> None:
        """Usage while the run goes on (input and cache final per model request); the
        ``result``'s totals replace it at the end."""
        fresh = _tokens(usage)
        self.usage = Usage(
            (self._progress.input_tokens or 0) + (fresh.input_tokens or 0),
            (self._progress.cached_input_tokens or 0) + (fresh.cached_input_tokens or 0),
            (self._progress.output_tokens or 0) + (fresh.output_tokens or 0),
            None,
        )
        self._progress = self.usage

    def _result(self, event: dict[str, Any]) -> str:
        self.result_seen = True
        self.is_error = event.get("is_error") is not False
        self.session_id = _str_or_none(event.get("session_id")) or self.session_id
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.usage = _tokens(usage)
        self.cost_usd = _run_cost(event)
        if self.usage is not None:
            self.usage.cost_usd = self.cost_usd
        self.structured_output = event.get("structured_output")
        status = event.get("api_error_status")
        self.api_error_status = status if isinstance(status, int) else None
        result = event.get("result")
        if not self.is_error:
            self.final_message = result if isinstance(result, str) else ""
            return f"result: {self.final_message}"
        errors = event.get("errors")
        detail = [str(e) for e in errors if e] if isinstance(errors, list) else []
        if isinstance(result, str) and result:
            self.error_message = result
        elif detail:
            self.error_message = "; ".join(detail)
        else:
            self.error_message = f"Claude Code ended with {event.get('subtype') or 'an error'}"
        return f"failed: {self.error_message}"

    def verdict(self, exit_code: int | None, stderr_tail: str) -> Verdict:
        if self.result_seen and not self.is_error and exit_code == 0:
            if self.expects_structured and self.structured_output is None:
                return Verdict(
                    succeeded=False,
                    category=ErrorCategory.CLI_ERROR,
                    message="Claude did not produce output matching output_schema "
                    "(structured_output is null)",
                )
            return Verdict(succeeded=True)
        message = self.error_message
        if not message:
            tail = stderr_tail.strip().splitlines()[-3:]
            if self.result_seen:
                message = f"claude exited with code {exit_code} after a successful result"
            else:
                message = f"claude exited with code {exit_code} without a result event" + (
                    f": {' '.join(tail)}" if tail else ""
                )
        auth = self.api_error_status in (401, 403) or _looks_like_auth(message)
        category = ErrorCategory.AUTH_ERROR if auth else ErrorCategory.CLI_ERROR
        return Verdict(succeeded=False, category=category, message=message)


def _tokens(usage: dict[str, Any]) -> Usage:
    """Anthropic counts cache reads and writes apart from ``input_tokens``; the gateway's
    ``input_tokens`` includes them and ``cached_input_tokens`` is their part."""
    fresh = _int(usage.get("input_tokens"))
    cached = _int(usage.get("cache_read_input_tokens")) + _int(
        usage.get("cache_creation_input_tokens")
    )
    return Usage(fresh + cached, cached, _int(usage.get("output_tokens")), None)


def _run_cost(event: dict[str, Any]) -> float | None:
    """This run's cost: the sum of ``model_usage_since_last_result[*].costUSD``."""
    per_model = event.get("model_usage_since_last_result")
    if not isinstance(per_model, dict):
        return None
    costs = [
        float(entry["costUSD"])
        for entry in per_model.values()
        if isinstance(entry, dict)
        and isinstance(entry.get("costUSD"), (int, float))
        and not isinstance(entry.get("costUSD"), bool)
    ]
    return sum(costs) if costs else 0.0


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _tool_input(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("command", "file_path", "path", "pattern", "url", "query"):
            if isinstance(value.get(key), str):
                return str(value[key])
    return json.dumps(value)[:200] if value is not None else ""


def _user_summary(event: dict[str, Any]) -> str:
    message = event.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                body = block.get("content")
                if isinstance(body, list):
                    body = "".join(str(p.get("text", "")) for p in body if isinstance(p, dict))
                label = "tool error" if block.get("is_error") else "tool result"
                return f"{label}: {body or ''}"
            if isinstance(block, dict) and block.get("type") == "text":
                return f"user: {block.get('text') or ''}"
    if isinstance(content, str):
        return f"user: {content}"
    return "user"


_AUTH_RE = re.compile(
    r"\b401\b|unauthori[sz]ed|invalid[_ ]api[_ ]key|authenticat|not logged in|/login",
    re.IGNORECASE,
)


def _looks_like_auth(message: str) -> bool:
    return bool(_AUTH_RE.search(message))

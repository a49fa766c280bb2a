"""OpenAI Codex CLI provider: ``codex exec`` / ``exec resume`` / ``exec fork`` with ``--json``.

Facts this relies on (Codex 0.169.0): stdin must be closed or ``exec`` waits forever; ``fork`` and
``resume`` do not take ``--sandbox``/``-C``/``--add-dir``, so those travel as ``-c`` config keys
and as the process's working directory; success is ``turn.completed`` *and* exit code 0.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from llmgw_jupyter.errors import (
    ErrorCategory,
    InvalidInputError,
)

# MAX_PROMPT_CHARS is re-exported: tests and callers name it here.
from llmgw_jupyter.providers.args import MAX_PROMPT_CHARS as MAX_PROMPT_CHARS
from llmgw_jupyter.providers.args import (
    AddDirs,
    IdempotencyKey,
    ModelSlug,
    OutputSchema,
    Prompt,
    TimeoutSeconds,
    WorkingDir,
    no_nul,
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
    clip_event,
    clip_text,
    find_cli,
    install_root,
)
from llmgw_jupyter.records import Usage

CODEX_PATH_ENV = "LLMGW_CODEX_PATH"
CODEX_NPM_PACKAGE = "@openai/codex@0.169.0"
SUMMARY_CHARS = 300

SandboxMode = Literal["read-only", "workspace-write", "danger-full-access"]
ConfigScalar = str | int | float | bool
_CONFIG_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+){0,7}$")
# Caller-supplied ``-c`` keys are an allow list: only keys that cannot change sandboxing,
# networking, credentials, endpoints, file locations, instructions or tools. Codex adds keys in
# every release, so anything not named here is refused. The owner may widen it in configuration
# (``c.LLMGatewayApp.codex_config_keys``, or the codex provider's ``config_keys`` option); a
# policy narrows it per grant with argument rules.
DEFAULT_ALLOWED_CONFIG_KEYS = frozenset(
    {
        "model_reasoning_effort",
        "model_reasoning_summary",
        "model_verbosity",
        "hide_agent_reasoning",
        "show_raw_agent_reasoning",
    }
)
# Set by the gateway on every run, never by a caller: what the commands Codex runs may inherit.
# "core" keeps HOME, PATH, locale and the like; the excludes are a second net for keys and tokens.
GATEWAY_CONFIG = (
    'shell_environment_policy.inherit="core"',
    'shell_environment_policy.exclude=["*KEY*", "*TOKEN*", "*SECRET*", "*PASSWORD*", '
    '"*CREDENTIAL*", "JUPYTER*", "LLMGW*", "CODEX_HOME"]',
)
MAX_CONFIG_VALUE_CHARS = 1_000
# The caller's Codex home inside the isolation boundary: a fixed path outside any temp dir
# (Codex refuses to create its sandbox helpers under one).
INSIDE_CODEX_HOME = "/llmgw/codex-home"
INSIDE_JOB_DIR = "/llmgw/job"
# Variables of the server's environment a Codex run may see besides the runtime's base set.
CREDENTIAL_ENV = ("CODEX_API_KEY", "OPENAI_API_KEY", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID")


class CodexArgs(BaseModel):
    """Arguments of a Codex request: the one schema behind MCP, REST and the magics."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    prompt: Prompt = Field(description="What Codex should do.")
    model: ModelSlug | None = Field(default=None, description="Model slug, e.g. gpt-5.5.")
    sandbox: SandboxMode = Field(
        default="read-only", description="Sandbox for commands Codex runs."
    )
    working_dir: WorkingDir | None = Field(
        default=None, description="Directory Codex works in (must exist)."
    )
    add_dirs: AddDirs = Field(default_factory=list, description="Extra writable directories.")
    config_overrides: dict[str, ConfigScalar | list[ConfigScalar]] = Field(
        default_factory=dict, max_length=32, description="Codex -c key=value overrides."
    )
    output_schema: OutputSchema | None = Field(
        default=None, description="JSON Schema the final answer must follow."
    )
    timeout_seconds: TimeoutSeconds = None
    idempotency_key: IdempotencyKey = None

    @field_validator("config_overrides")
    @classmethod
    def _overrides(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if not _CONFIG_KEY_RE.match(key):
                raise ValueError(
                    f"config key {key!r} must be a dotted name of letters, digits, _ -"
                )
            scalars = item if isinstance(item, list) else [item]
            if len(scalars) > 32:
                raise ValueError(f"config value of {key!r} must have at most 32 items")
            for scalar in scalars:
                if isinstance(scalar, str):
                    no_nul(scalar, "config value")
                    if len(scalar) > MAX_CONFIG_VALUE_CHARS:
                        raise ValueError(
                            f"config value of {key!r} must be at most "
                            f"{MAX_CONFIG_VALUE_CHARS} characters"
                        )
        return value


def check_config_keys(overrides: dict[str, Any], allowed: frozenset[str]) -> None:
    """Refuse any ``-c`` key that is not on the allow list, naming it and how to widen it."""
    for key in overrides:
        if key not in allowed:
            raise InvalidInputError(
                "config_overrides",
                f"{key!r} is not an allowed Codex config key (allowed: "
                f"{', '.join(sorted(allowed)) or 'none'}); keys that could change sandboxing, "
                "networking, credentials, endpoints, files, instructions or tools are never "
                "accepted from callers; the owner can allow more with "
                "c.LLMGatewayApp.codex_config_keys",
            )


class CodexResumeArgs(CodexArgs):
    session_id: SessionId = Field(description="Codex session (thread) id to continue or fork.")


_INSTALL_HINT = (
    f"`npm install --prefix .codex-cli {CODEX_NPM_PACKAGE}` and put .codex-cli/node_modules/.bin "
    "on PATH (or point LLMGW_CODEX_PATH at .codex-cli/node_modules/.bin/codex)"
)


def find_codex(explicit: str | None = None) -> str:
    """Configuration, then ``$LLMGW_CODEX_PATH``, then ``PATH``; a clear error otherwise."""
    return find_cli(
        explicit,
        env_var=CODEX_PATH_ENV,
        command="codex",
        label="Codex CLI",
        setting="c.LLMGatewayApp.codex_path",
        install_hint=_INSTALL_HINT,
        install_noun="Codex",
    )


def _toml_value(value: object) -> str:
    """A ``-c`` value: scalars written by tomli-w, arrays kept on one line (as Codex shows them)."""
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")


# Arguments small enough for every job view; the rest (prompt, output schema, config overrides)
# is named in ``omitted_args`` and shown by llm_job_status with include_args: true.
LIGHT_ARG_KEYS = ("model", "sandbox", "working_dir", "add_dirs", "session_id", "timeout_seconds")


class CodexProvider:
    """Builds Codex command lines and parses its JSONL stream."""

    name = "codex"
    tool_spec = ToolSpec(
        label="Codex",
        request_noun="an OpenAI Codex CLI request",
        command="codex exec",
        args_model=CodexArgs,
        light_arg_keys=LIGHT_ARG_KEYS,
        session_id=SessionId,
    )

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> CodexProvider:
        """``path`` is the codex executable, ``home`` its CODEX_HOME; option ``config_keys``
        widens the caller ``-c`` allow list."""
        settings.check_options(cls.name, {"config_keys"})
        keys = settings.options.get("config_keys")
        allowed = None
        if keys is not None:
            if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
                raise ProviderConfigError(
                    cls.name, "options.config_keys", "must be a list of Codex config key names"
                )
            allowed = DEFAULT_ALLOWED_CONFIG_KEYS | frozenset(keys)
        return cls(settings.path, codex_home=settings.home, allowed_config_keys=allowed)

    def __init__(
        self,
        executable: str | None = None,
        *,
        codex_home: str | None = None,
        env: dict[str, str] | None = None,
        allowed_config_keys: frozenset[str] | None = None,
    ) -> None:
        self._explicit = executable
        # Jobs run in their own working dirs: a relative home would point somewhere else there.
        self.codex_home = str(Path(codex_home).expanduser().resolve()) if codex_home else None
        self.env = dict(env or {})
        self.allowed_config_keys = (
            DEFAULT_ALLOWED_CONFIG_KEYS if allowed_config_keys is None else allowed_config_keys
        )

    def executable(self) -> str:
        return find_codex(self._explicit)

    def check_ready(self) -> None:
        self.executable()

    def validate(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        parsed = parse_args(CodexArgs if kind == "exec" else CodexResumeArgs, args)
        check_config_keys(parsed.config_overrides, self.allowed_config_keys)
        return resolve_paths(parsed.model_dump(exclude_none=True, exclude_defaults=False))

    def protected_paths(self) -> list[str]:
        return [str(self.base_home())]

    def base_home(self) -> Path:
        """The owner's Codex home: configured, else ``$CODEX_HOME``, else ``~/.codex``."""
        return Path(self.codex_home or os.environ.get("CODEX_HOME") or Path.home() / ".codex")

    def build_command(
        self, kind: str, args: dict[str, Any], job_dir: Path, context: LaunchContext
    ) -> Command:
        # Checked again at start: a caller's keys must not pass because the list was wider once.
        check_config_keys(args.get("config_overrides", {}), self.allowed_config_keys)
        executable = self.executable()
        argv = [executable, "exec"]
        if kind in ("resume", "fork"):
            argv.append(kind)
        argv += ["--json", "--skip-git-repo-check"]
        if args.get("model"):
            argv += ["--model", args["model"]]
        sandbox = args.get("sandbox", "read-only")
        add_dirs: list[str] = args.get("add_dirs", [])
        working_dir = args.get("working_dir")
        for key, value in args.get("config_overrides", {}).items():
            argv += ["-c", f"{key}={_toml_value(value)}"]
        # The gateway's settings come after the caller's: the sandbox and the environment policy
        # are the gateway's on exec, resume and fork alike.
        if kind == "exec":
            argv += ["--sandbox", sandbox]
            if working_dir:
                argv += ["-C", working_dir]
            for directory in add_dirs:
                argv += ["--add-dir", directory]
        argv += ["-c", f"sandbox_mode={_toml_value(sandbox)}"]
        if add_dirs:
            argv += ["-c", f"sandbox_workspace_write.writable_roots={_toml_value(add_dirs)}"]
        for setting in GATEWAY_CONFIG:
            argv += ["-c", setting]
        mounts = Mounts(writable=list(add_dirs), read_only=[install_root(executable)])
        env = dict(self.env)
        if args.get("output_schema") is not None:
            schema_file = job_dir / "output_schema.json"
            write_private(schema_file, json.dumps(args["output_schema"]))
            schema_path = str(schema_file)
            if context.isolated:
                schema_path = f"{INSIDE_JOB_DIR}/output_schema.json"
                mounts.private[schema_path] = str(schema_file)
            argv += ["--output-schema", schema_path]
        argv.append("--")
        if kind in ("resume", "fork"):
            argv.append(args["session_id"])
        argv.append("-")
        home = self._home_for(context)
        env.update(self._credentials(context))
        if home is not None:
            if context.isolated:
                mounts.private[INSIDE_CODEX_HOME] = str(home)
                env["CODEX_HOME"] = INSIDE_CODEX_HOME
            else:
                env["CODEX_HOME"] = str(home)
        return Command(
            argv=argv,
            stdin=args["prompt"].encode(),
            cwd=working_dir,
            env=env,
            mounts=mounts,
            env_names=(*CREDENTIAL_ENV, *self._provider_env_keys()),
        )

    def _home_for(self, context: LaunchContext) -> Path | None:
        """The owner uses the configured home; each grant a home of its own under the data dir,
        holding a copy of the owner's config.toml and never the owner's auth.json."""
        if context.caller == "owner":
            if self.codex_home is None and not context.isolated:
                return None  # Codex's own default, as before
            home = self.base_home()
            if context.isolated:  # bound into the boundary: it must exist
                home.mkdir(parents=True, exist_ok=True, mode=0o700)
            return home
        home = context.state_dir / "codex-home"
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        source = self.base_home() / "config.toml"
        target = home / "config.toml"
        if source.is_file():
            text = source.read_text(encoding="utf-8")
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                write_private(target, text)
        return home

    def _credentials(self, context: LaunchContext) -> dict[str, str]:
        """A grant's run gets the owner's API key as ``CODEX_API_KEY`` (kept from the commands
        Codex runs by the gateway's environment policy), never the auth.json file itself."""
        if context.caller == "owner":
            return {}
        if os.environ.get("CODEX_API_KEY") or os.environ.get("OPENAI_API_KEY"):
            return {}
        key = _api_key_of(self.base_home() / "auth.json")
        return {"CODEX_API_KEY": key} if key else {}

    def _provider_env_keys(self) -> tuple[str, ...]:
        """``env_key`` variables named by model providers in the owner's config.toml."""
        providers = read_codex_config(self.base_home()).get("model_providers")
        names: list[str] = []
        if isinstance(providers, dict):
            for entry in providers.values():
                env_key = entry.get("env_key") if isinstance(entry, dict) else None
                if isinstance(env_key, str) and re.fullmatch(r"[A-Za-z_]\w{0,63}", env_key):
                    names.append(env_key)
        return tuple(names)

    def new_parser(self) -> CodexStreamParser:
        return CodexStreamParser()


MAX_CONFIG_BYTES = 1024 * 1024


def read_codex_config(home: Path) -> dict[str, Any]:
    """``<home>/config.toml`` as a dict, or {} when it is missing, too big (1 MiB), not TOML,
    or Python is 3.10 (no tomllib: nothing is claimed from it then)."""
    try:
        import tomllib
    except ImportError:
        return {}
    path = home / "config.toml"
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            return {}
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        return {}
    return config if isinstance(config, dict) else {}


def _api_key_of(auth_file: Path) -> str | None:
    try:
        data = json.loads(auth_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    key = data.get("OPENAI_API_KEY") if isinstance(data, dict) else None
    return key if isinstance(key, str) and key else None


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


class CodexStreamParser:
    """State of one ``codex exec --json`` stream, fed line by line as it arrives."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.final_message: str | None = None
        self.usage: Usage | None = None
        self.error_message: str | None = None
        self.turn_completed = False
        self.turn_failed = False

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
        summary = self._apply(kind, event)
        return [
            ParsedEvent(
                type=kind, summary=clip_text(summary, SUMMARY_CHARS), data=clip_event(event)
            )
        ]

    def _apply(self, kind: str, event: dict[str, Any]) -> str:
        if kind == "thread.started":
            self.session_id = str(event.get("thread_id") or "") or None
            return f"session {self.session_id}"
        if kind == "turn.started":
            return "turn started"
        if kind == "turn.completed":
            self.turn_completed = True
            usage = event.get("usage") or {}
            self.usage = Usage(
                usage.get("input_tokens"),
                usage.get("cached_input_tokens"),
                usage.get("output_tokens"),
                usage.get("reasoning_output_tokens"),
            )
            return (
                f"turn completed · {usage.get('input_tokens', 0)} in / "
                f"{usage.get('output_tokens', 0)} out tokens"
            )
        if kind == "turn.failed":
            self.turn_failed = True
            message = str((event.get("error") or {}).get("message") or "turn failed")
            self.error_message = message
            return f"turn failed: {message}"
        if kind == "error":
            message = str(event.get("message") or "error")
            if not _is_retry_notice(message):
                self.error_message = message
            return message
        if kind.startswith("item."):
            item = event.get("item") or {}
            if kind == "item.completed" and item.get("type") == "agent_message":
                self.final_message = str(item.get("text") or "")
            return _item_summary(kind, item)
        return kind

    def verdict(self, exit_code: int | None, stderr_tail: str) -> Verdict:
        if exit_code == 0 and self.turn_completed and not self.turn_failed:
            return Verdict(succeeded=True)
        message = self.error_message
        if not message:
            tail = stderr_tail.strip().splitlines()[-3:]
            if exit_code == 0:
                message = "codex exited 0 without completing the turn (no turn.completed event)"
            else:
                message = f"codex exited with code {exit_code}" + (
                    f": {' '.join(tail)}" if tail else ""
                )
        category = (
            ErrorCategory.AUTH_ERROR if _looks_like_auth(message) else ErrorCategory.CLI_ERROR
        )
        return Verdict(succeeded=False, category=category, message=message)


def _is_retry_notice(message: str) -> bool:
    return message.startswith("Reconnecting")


_AUTH_RE = re.compile(
    r"\b401\b|unauthori[sz]ed|invalid[_ ]api[_ ]key|incorrect api key|authentication|not logged in",
    re.IGNORECASE,
)


def _looks_like_auth(message: str) -> bool:
    return bool(_AUTH_RE.search(message))


def _item_summary(kind: str, item: dict[str, Any]) -> str:
    item_type = str(item.get("type") or "item")
    verb = kind.removeprefix("item.")
    if item_type in ("agent_message", "reasoning"):
        label = "message" if item_type == "agent_message" else "reasoning"
        return f"{label}: {item.get('text') or ''}"
    if item_type == "command_execution":
        status = item.get("status") or verb
        code = item.get("exit_code")
        suffix = f" (exit {code})" if code is not None else ""
        return f"command {status}: {item.get('command') or ''}{suffix}"
    if item_type == "file_change":
        changes = item.get("changes") or []
        files = ", ".join(f"{c.get('kind', 'update')} {c.get('path', '?')}" for c in changes[:5])
        return f"files changed: {files}"
    if item_type == "mcp_tool_call":
        return f"tool {item.get('server', '')}/{item.get('tool', '')}: {item.get('status') or verb}"
    if item_type == "web_search":
        return f"web search: {item.get('query') or ''}"
    if item_type == "todo_list":
        todos = item.get("items") or []
        done = sum(1 for t in todos if t.get("completed"))
        return f"plan: {done}/{len(todos)} done"
    if item_type == "error":
        return f"error: {item.get('message') or ''}"
    return f"{item_type} {verb}"


def codex_has_credentials(env: dict[str, str] | None = None) -> bool:
    """Whether Codex could reach a real model: an API key or a saved ChatGPT login."""
    env = dict(os.environ) if env is None else env
    if env.get("OPENAI_API_KEY") or env.get("CODEX_API_KEY"):
        return True
    home = Path(env.get("CODEX_HOME") or Path.home() / ".codex")
    return (home / "auth.json").is_file()


def describe_model(codex_home: str | None) -> dict[str, Any]:
    """Which model jobs reach, for the UI: ``{"local_echo": bool, "label": str}``.

    ``local_echo`` is true for the bundled echo model (``llmgw mock-model``, tests): the Codex
    home's ``model_provider`` is ``mock`` and its ``base_url`` is on loopback. ``codex_home``
    None means ``$CODEX_HOME`` or ``~/.codex``, as for the provider. An unreadable config says
    what Codex would use by default.
    """
    import ipaddress
    from urllib.parse import urlsplit

    home = Path(codex_home or os.environ.get("CODEX_HOME") or Path.home() / ".codex")
    config = read_codex_config(home.expanduser())
    provider = config.get("model_provider")
    providers = config.get("model_providers")
    entry = providers.get(provider) if isinstance(providers, dict) and provider else None
    base_url = entry.get("base_url") if isinstance(entry, dict) else None
    host = ""
    if isinstance(base_url, str):
        try:
            host = urlsplit(base_url).hostname or ""
        except ValueError:
            host = ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if provider == "mock" and loopback:
        return {"local_echo": True, "label": "local echo model (answers repeat the prompt)"}
    model = config.get("model")
    label = str(model)[:128] if isinstance(model, str) and model else "Codex's default model"
    return {"local_echo": False, "label": label}

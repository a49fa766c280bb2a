"""IPython magics: ``%codex_async``, ``%codex_fork``, ``%llm_jobs``, ``%llm_job``, ``%llm_cancel``,
``%llm_result`` and ``%llm_approvals``.

Options are parsed with argparse (``--help`` on every magic); a provider's options come from its
tools' input models (help texts, choices) and are checked by them before anything is sent, so
the rules live in one place. Prompt text after the options is taken verbatim, then ``{expr}``
fields are filled from the notebook.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, NoReturn, get_args

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, no_var_expand
from IPython.display import display
from pydantic import BaseModel, ValidationError

from llmgw_jupyter.kernel.client import MAX_WAIT_SECONDS, GatewayCallError, GatewayClient, connect
from llmgw_jupyter.kernel.handle import (
    ACTIVE_STATUSES,
    JobHandle,
    JobResult,
    in_kernel,
    one_line,
    progress_line,
)
from llmgw_jupyter.kernel.presentation import (
    TEXT_STYLE,
    decision_text,
    describe_state,
    expiry_text,
    job_age,
    job_duration,
    local_time,
    timestamp,
)
from llmgw_jupyter.kernel.tasks import RETRY_DELAYS, spawn, uninstall_resend, update_display
from llmgw_jupyter.providers.registry import installed_providers, load_provider_class
from llmgw_jupyter.render import escape_text
from llmgw_jupyter.tools.schemas import ProviderInputs, provider_inputs

# Option name of each tool argument, to name the option in a validation error. Other simple
# arguments of a provider's model become ``--field-name`` options.
OPTION_FOR_FIELD = {
    "prompt": "PROMPT",
    "model": "--model",
    "sandbox": "--sandbox",
    "working_dir": "--cd",
    "add_dirs": "--add-dir",
    "session_id": "--session",
    "timeout_seconds": "--timeout",
    "idempotency_key": "--key",
    "last": "--last",
}
_KEEP = object()


# -- argument parsing ---------------------------------------------------------------------------
class _HelpShown(Exception):
    """``--help`` printed the usage: the magic ends quietly."""


class MagicParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line (UsageError) and never exits."""

    def __init__(self, prog: str, description: str) -> None:
        super().__init__(
            prog=f"%{prog}",
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
            add_help=True,
        )

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, file=sys.stderr)
        raise _HelpShown()

    def print_help(self, file: Any = None) -> None:
        print(self.format_help(), end="")


def _describe(model: type[BaseModel], field: str) -> str:
    return (model.model_fields[field].description or "").replace("%", "%%")


# Arguments the magics set themselves, or that have no option (structured values).
_NO_OPTION = {"prompt", "session_id", "last", "wait_seconds", "config_overrides", "output_schema"}
# Option of each field with a fixed spelling: (option, dest, metavar, value type, repeatable).
_FIXED_OPTIONS: dict[str, tuple[str, str, str | None, type | None, bool]] = {
    "model": ("--model", "model", None, None, False),
    "sandbox": ("--sandbox", "sandbox", None, None, False),
    "working_dir": ("--cd", "cd", "DIR", None, False),
    "add_dirs": ("--add-dir", "add_dir", "DIR", None, True),
    "timeout_seconds": ("--timeout", "timeout", "SECONDS", float, False),
    "idempotency_key": ("--key", "key", "KEY", None, False),
}


def _choices(model: type[BaseModel], field: str) -> tuple[Any, ...] | None:
    """The values of a Literal field (``str | None`` wrappers looked through)."""
    annotation = model.model_fields[field].annotation
    for candidate in (annotation, *get_args(annotation)):
        values = get_args(candidate)
        if values and all(isinstance(v, str) for v in values):
            return values
    return None


def _argument_options(model: type[BaseModel]) -> list[tuple[str, str]]:
    """(field, dest) of every argument the model's options set, in the model's order."""
    found = []
    for field in model.model_fields:
        if field in _NO_OPTION:
            continue
        fixed = _FIXED_OPTIONS.get(field)
        found.append((field, fixed[1] if fixed else field))
    return found


def _add_request_options(parser: MagicParser, model: type[BaseModel], *, resume: bool) -> None:
    """A provider's options, with help texts and choices taken from the tool's schema."""
    fixed_order = [f for f in _FIXED_OPTIONS if f in model.model_fields]
    others = [f for f, _ in _argument_options(model) if f not in _FIXED_OPTIONS]
    for field in fixed_order[:4]:  # --model --sandbox --cd --add-dir, then --session
        _add_field_option(parser, model, field)
    if resume:
        parser.add_argument("--session", metavar="ID", help=_describe(model, "session_id"))
    for field in [*fixed_order[4:], *others]:
        _add_field_option(parser, model, field)
    parser.add_argument(
        "--wait",
        action="store_true",
        help="block until the job ends and show the answer; an interrupt (Ctrl-C, the stop "
        "button) ends the wait only, never the job",
    )
    parser.add_argument("--out", metavar="NAME", help="bind the job handle to this variable")
    parser.add_argument("--quiet", action="store_true", help="no widget or progress output")


def _add_field_option(parser: MagicParser, model: type[BaseModel], field: str) -> None:
    option, dest, metavar, kind, repeat = _FIXED_OPTIONS.get(
        field, ("--" + field.replace("_", "-"), field, None, None, False)
    )
    annotation = model.model_fields[field].annotation
    if field not in _FIXED_OPTIONS and "list" in str(annotation):
        repeat = True
    help_text = _describe(model, field) + (" (repeatable)" if repeat else "")
    extra: dict[str, Any] = {"type": kind} if kind is not None else {}
    parser.add_argument(
        option,
        dest=dest,
        metavar=metavar,
        choices=_choices(model, field),
        action="append" if repeat else "store",
        help=help_text,
        **extra,
    )


# The providers with magics: %<name>_async and %<name>_fork drive the provider's tools. Codex's
# are methods of LLMGatewayMagics; every other installed provider's are registered on load.
MAGIC_PROVIDERS = ("codex", *(name for name in installed_providers() if name != "codex"))


def magic_inputs(provider: str) -> tuple[str, ProviderInputs]:
    """The provider's label and tool input models, from the installed provider class."""
    cls = load_provider_class(provider, installed_providers()[provider])
    return cls.tool_spec.label, provider_inputs(provider, cls.tool_spec)


def _can_fork(provider: str) -> bool:
    return load_provider_class(provider, installed_providers()[provider]).tool_spec.can_fork


def _build_provider_parsers(provider: str) -> dict[str, MagicParser]:
    label, inputs = magic_inputs(provider)
    request = MagicParser(
        f"{provider}_async",
        f"Start a {label} request as a background job and show its live widget.\n"
        f"  %{provider}_async [options] PROMPT      or      %%{provider}_async [options]  "
        "(cell = prompt)\n"
        "{name} and {expression} in the prompt are filled from the notebook; write {{ and }}\n"
        "for literal braces (braces holding no valid, defined expression are kept as written).",
    )
    _add_request_options(request, inputs.request_async, resume=True)
    if not _can_fork(provider):
        return {f"{provider}_async": request}
    fork = MagicParser(
        f"{provider}_fork",
        f"Run a prompt against a fork of a {label} session; the original session is "
        "unchanged.\n"
        f"  %{provider}_fork [options] SESSION PROMPT   %{provider}_fork [options] --last PROMPT\n"
        f"  %%{provider}_fork [options] SESSION         (the cell is the prompt)\n"
        "SESSION is a session id, a job id, or a variable holding a job handle.",
    )
    fork.add_argument("--last", action="store_true", help=_describe(inputs.fork, "last"))
    _add_request_options(fork, inputs.fork, resume=False)
    return {f"{provider}_async": request, f"{provider}_fork": fork}


def _build_parsers() -> dict[str, MagicParser]:
    parsers: dict[str, MagicParser] = {}
    for provider in MAGIC_PROVIDERS:
        parsers.update(_build_provider_parsers(provider))

    jobs = MagicParser("llm_jobs", "A table of recent jobs: id, status, age, prompt, session.")
    jobs.add_argument("--status", help="only jobs in this state (e.g. running)")
    jobs.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    parsers["llm_jobs"] = jobs

    job = MagicParser(
        "llm_job",
        "Show the live widget of any job again (e.g. after a kernel restart); returns its "
        "handle.\nID is a job id or a variable holding a handle (default: the last job).",
    )
    job.add_argument("id", nargs="?", metavar="ID")
    job.add_argument("--out", metavar="NAME", help="bind the job handle to this variable")
    parsers["llm_job"] = job

    cancel = MagicParser("llm_cancel", "Cancel a job (default: the last job started here).")
    cancel.add_argument("id", nargs="?", metavar="ID")
    parsers["llm_cancel"] = cancel

    result = MagicParser("llm_result", "A job's answer as Markdown (default: the last job).")
    result.add_argument("id", nargs="?", metavar="ID")
    result.add_argument("--wait", action="store_true", help="wait for the job to end first")
    result.add_argument("--raw", action="store_true", help="the raw output (Codex's JSONL) instead")
    result.add_argument("--stream", choices=("stdout", "stderr"), default="stdout")
    result.add_argument("--offset", type=int, default=0, help="byte offset of the raw page")
    parsers["llm_result"] = result

    approvals = MagicParser(
        "llm_approvals",
        "Pending approvals with approve and deny buttons; or decide one directly.\n"
        "ID is an approval id, the id of a job waiting for approval, or a handle variable.",
    )
    decide = approvals.add_mutually_exclusive_group()
    decide.add_argument("--approve", metavar="ID", help="approve this request")
    decide.add_argument("--deny", metavar="ID", help="deny this request")
    approvals.add_argument("--all", action="store_true", help="decided ones too")
    parsers["llm_approvals"] = approvals
    return parsers


PARSERS = _build_parsers()


def _read_token(line: str, pos: int) -> tuple[str, int]:
    """One shell-like token at ``pos`` (quotes allowed); returns it and the end position."""
    if line[pos] in "'\"":
        quote = line[pos]
        end = pos + 1
        chars: list[str] = []
        while end < len(line) and line[end] != quote:
            if line[end] == "\\" and end + 1 < len(line) and quote == '"':
                end += 1
            chars.append(line[end])
            end += 1
        if end >= len(line):
            raise UsageError(f"unclosed {quote} in the magic's options")
        return "".join(chars), end + 1
    end = pos
    while end < len(line) and not line[end].isspace():
        end += 1
    return line[pos:end], end


def split_options(line: str, parser: argparse.ArgumentParser) -> tuple[list[str], str]:
    """Leading options (and their values) as tokens; the rest of the line stays verbatim.

    Prompts are free text with apostrophes and braces, so they are never shell-split. ``--``
    ends the options explicitly (for a prompt starting with ``-``).
    """
    tokens: list[str] = []
    pos = 0
    while True:
        while pos < len(line) and line[pos].isspace():
            pos += 1
        if pos >= len(line) or line[pos] != "-":
            break
        token, end = _read_token(line, pos)
        if token == "--":
            pos = end
            break
        tokens.append(token)
        pos = end
        action = parser._option_string_actions.get(token.split("=", 1)[0])
        if action is None or action.nargs == 0 or "=" in token:
            continue  # unknown options are reported by the parser; flags take no value
        while pos < len(line) and line[pos].isspace():
            pos += 1
        if pos < len(line):
            value, pos = _read_token(line, pos)
            tokens.append(value)
    if pos < len(line) and line[pos].isspace():
        pos += 1
    return tokens, line[pos:]


def split_all(line: str) -> list[str]:
    """Every token of a line without free text (shell quoting)."""
    try:
        return shlex.split(line)
    except ValueError as error:  # "No closing quotation"
        raise UsageError(f"{error} in the magic's options") from None


def parse(
    magic: str, line: str, namespace: Mapping[str, Any] | None = None
) -> tuple[argparse.Namespace, str]:
    """Options of ``magic`` (values interpolated like the prompt) and the verbatim rest.

    Magics taking a prompt stop at the first word that is not an option; the others parse
    their whole line.
    """
    parser = PARSERS[magic]
    if magic.removesuffix("_async").removesuffix("_fork") in MAGIC_PROVIDERS:
        tokens, rest = split_options(line, parser)
    else:
        tokens, rest = split_all(line), ""
    if namespace is not None:
        tokens = [interpolate(token, namespace) for token in tokens]
    return parser.parse_args(tokens), rest


# -- prompt interpolation -----------------------------------------------------------------------
def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    """Fill ``{expr}`` from the namespace (f-string rules: ``{x!r}``, ``{x:.2f}`` work).

    ``{{`` and ``}}`` are literal braces. A field that is not a valid expression, or names
    something undefined, is kept as written (code in prompts is full of braces).
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "{" and text.startswith("{{", i):
            out.append("{")
            i += 2
        elif char == "}" and text.startswith("}}", i):
            out.append("}")
            i += 2
        elif char == "{":
            end = _closing_brace(text, i)
            if end < 0:
                out.append(text[i:])
                break
            value = _evaluate(text[i + 1 : end], namespace)
            out.append(text[i : end + 1] if value is _KEEP else str(value))
            i = end + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    return -1


def _evaluate(field: str, namespace: Mapping[str, Any]) -> Any:
    """A plain expression's value (its errors are reported), else the f-string form's, else keep.

    Only a field that is a valid expression on its own can fail loudly: anything else (JSON,
    code) was most likely meant literally.
    """
    if not field.strip() or "\n" in field.strip():
        return _KEEP
    globals_ = dict(namespace)
    try:
        code = compile(field.strip(), "<prompt>", "eval")
    except SyntaxError:
        try:  # conversions and format specs: {x!r}, {x:.2f}
            return eval(compile("f" + repr("{" + field + "}"), "<prompt>", "eval"), globals_)
        except Exception:
            return _KEEP
    try:
        return eval(code, globals_)
    except NameError:
        return _KEEP
    except Exception as error:
        raise UsageError(f"{{{field}}} in the prompt: {type(error).__name__}: {error}") from None


# -- magics -----------------------------------------------------------------------------------
@magics_class
class LLMGatewayMagics(Magics):
    """The notebook front of the gateway. One client per kernel, chosen on first use."""

    def __init__(self, shell: Any, client: GatewayClient | None = None) -> None:
        super().__init__(shell)
        self._client = client
        self.last_handle: JobHandle | None = None

    @property
    def _ns(self) -> dict[str, Any]:
        return self.shell.user_ns if self.shell is not None else {}

    @property
    def client(self) -> GatewayClient:
        if self._client is None:
            self._client = connect(announce=print)
        return self._client

    # -- %codex_async / %%codex_async ------------------------------------------------------------
    @line_cell_magic
    @no_var_expand
    def codex_async(self, line: str, cell: str | None = None) -> Any:
        """Start a Codex request as a background job; see ``%codex_async --help``."""
        return self._request_magic("codex", line, cell)

    def _request_magic(self, provider: str, line: str, cell: str | None) -> Any:
        magic = f"{provider}_async"
        try:
            options, rest = parse(magic, line, self._ns)
        except _HelpShown:
            return None
        prompt = self._prompt(rest, cell, magic)
        model = magic_inputs(provider)[1].request_async
        arguments = self._request_arguments(model, options, prompt)
        if options.session:
            arguments["session_id"] = options.session
        self._validate(magic, model, arguments)
        return self._start(f"{provider}_request_async", arguments, options)

    # -- %codex_fork / %%codex_fork --------------------------------------------------------------
    @line_cell_magic
    @no_var_expand
    def codex_fork(self, line: str, cell: str | None = None) -> Any:
        """Run a prompt against a fork of a session; see ``%codex_fork --help``."""
        return self._fork_magic("codex", line, cell)

    def _fork_magic(self, provider: str, line: str, cell: str | None) -> Any:
        magic = f"{provider}_fork"
        model = magic_inputs(provider)[1].fork
        parser = PARSERS[magic]
        try:
            tokens, rest = split_options(line, parser)
            session_token: str | None = None
            if "--last" not in tokens and rest.strip():
                session_token, end = _read_token(rest, 0)
                session_token = interpolate(session_token, self._ns)
                more, rest = split_options(rest[end:], parser)
                tokens += more
            options = parser.parse_args([interpolate(t, self._ns) for t in tokens])
        except _HelpShown:
            return None
        if options.last and session_token:
            raise UsageError(f"%{magic}: give SESSION or --last, not both")
        if not options.last and not session_token:
            raise UsageError(f"%{magic}: SESSION is required (or --last)")
        prompt = self._prompt(rest, cell, magic)
        arguments = self._request_arguments(model, options, prompt)
        if options.last:
            arguments["last"] = True
        else:
            arguments["session_id"] = "0"  # checked below, once resolved
        self._validate(magic, model, arguments, skip={"session_id"})
        if session_token:
            try:
                arguments["session_id"] = self._resolve_session(session_token)
            except GatewayCallError as error:
                self._report(error)
                return None
            self._validate(magic, model, arguments)
        return self._start(f"{provider}_fork_session", arguments, options)

    # -- %llm_jobs ---------------------------------------------------------------------------
    @line_magic
    @no_var_expand
    def llm_jobs(self, line: str) -> None:
        """A table of recent jobs; see ``%llm_jobs --help``."""
        try:
            options, rest = parse("llm_jobs", line, self._ns)
        except _HelpShown:
            return
        self._no_extra("llm_jobs", rest)
        try:
            jobs, total = self.client.blocking(
                self.client.list_jobs(status=options.status, limit=options.limit)
            )
        except GatewayCallError as error:
            self._report(error)
            return
        table = JobTable(jobs, total)
        shown = display(table, display_id=True)
        if shown is not None and in_kernel():
            table.follow(self.client, shown)

    # -- %llm_job -----------------------------------------------------------------------------
    @line_magic
    @no_var_expand
    def llm_job(self, line: str) -> JobHandle | None:
        """Re-attach the live widget to a job; see ``%llm_job --help``."""
        try:
            options, rest = parse("llm_job", line, self._ns)
        except _HelpShown:
            return None
        self._no_extra("llm_job", rest)
        _check_out_name(options.out)
        job_id = self._job_id(options.id)
        try:
            handle = JobHandle.attach(self.client, job_id)
        except GatewayCallError as error:
            self._report(error)
            return None
        self._remember(handle, options.out)
        self._show(handle)
        return handle

    # -- %llm_cancel --------------------------------------------------------------------------
    @line_magic
    @no_var_expand
    def llm_cancel(self, line: str) -> None:
        """Cancel a job; see ``%llm_cancel --help``."""
        try:
            options, rest = parse("llm_cancel", line, self._ns)
        except _HelpShown:
            return
        self._no_extra("llm_cancel", rest)
        job_id = self._job_id(options.id)
        try:
            job = self.client.blocking(self.client.cancel_job(job_id))
        except GatewayCallError as error:
            self._report(error)
            return
        for handle in self._known_handles(job_id):
            handle.merge_update(job)
        print(f"job {job_id}: {job['status']}")

    # -- %llm_result --------------------------------------------------------------------------
    @line_magic
    @no_var_expand
    def llm_result(self, line: str) -> JobResult | None:
        """A job's answer as Markdown; see ``%llm_result --help``."""
        try:
            options, rest = parse("llm_result", line, self._ns)
        except _HelpShown:
            return None
        self._no_extra("llm_result", rest)
        job_id = self._job_id(options.id)
        try:
            if options.raw:
                page = self.client.blocking(
                    self.client.job_result(job_id, stream=options.stream, offset=options.offset)
                )
                output = page["output"]
                print(output["data"], end="" if output["data"].endswith("\n") else "\n")
                if not output.get("eof", True):
                    print(f"… more: %llm_result {job_id} --raw --offset {output['next_offset']}")
                return None
            handle = self._handle_for(job_id)
            if options.wait:
                try:
                    handle.wait()
                except KeyboardInterrupt:
                    print(f"Stopped waiting; job {job_id} keeps running.")
                    return None
            else:
                handle.refresh()
        except GatewayCallError as error:
            self._report(error)
            return None
        if not handle.done:
            print(
                f"job {job_id} is still {handle.job['status']}; "
                f"%llm_result {job_id} --wait waits for it"
            )
            return None
        return handle.current_result()

    # -- %llm_approvals -----------------------------------------------------------------------
    @line_magic
    @no_var_expand
    def llm_approvals(self, line: str) -> None:
        """Pending approvals with approve and deny buttons; see ``%llm_approvals --help``."""
        try:
            options, rest = parse("llm_approvals", line, self._ns)
        except _HelpShown:
            return
        self._no_extra("llm_approvals", rest)
        try:
            if options.approve or options.deny:
                approve = bool(options.approve)
                approval_id = self._approval_id(options.approve or options.deny)
                record = self.client.blocking(self.client.decide_approval(approval_id, approve))
                print(
                    f"approval {record['id']} (job {record.get('job_id')}): {decision_text(record)}"
                )
                for handle in self._known_handles(record.get("job_id")):
                    handle.refresh()
                return
            approvals = self.client.blocking(
                self.client.approvals("all" if options.all else "pending")
            )
        except GatewayCallError as error:
            self._report(error)
            return
        if in_kernel():
            from llmgw_jupyter.kernel.widget import ApprovalsWidget

            display(ApprovalsWidget(self.client, approvals))
        else:
            print(approvals_text(approvals))

    # -- helpers -------------------------------------------------------------------------------
    def _prompt(self, rest: str, cell: str | None, magic: str) -> str:
        if cell is not None:
            if rest.strip():
                raise UsageError(
                    f"%%{magic}: unexpected text {rest.strip()!r} after the options "
                    "(the cell body is the prompt)"
                )
            text = cell.rstrip().lstrip("\n")  # the cell's own trailing newline is no prompt
        else:
            text = rest
        if not text.strip():
            raise UsageError(f"%{magic}: PROMPT is empty (see %{magic} --help)")
        return interpolate(text, self._ns)

    @staticmethod
    def _request_arguments(
        model: type[BaseModel], options: argparse.Namespace, prompt: str
    ) -> dict[str, Any]:
        """Tool arguments; the CLI works in the notebook's directory unless ``--cd`` says else."""
        arguments: dict[str, Any] = {"prompt": prompt}
        if "working_dir" in model.model_fields:
            arguments["working_dir"] = os.getcwd()
        for field, dest in _argument_options(model):
            value = getattr(options, dest)
            if value is not None:
                arguments[field] = value
        return arguments

    @staticmethod
    def _validate(
        magic: str,
        model: type[BaseModel],
        arguments: Mapping[str, Any],
        skip: set[str] | None = None,
    ) -> None:
        """The tool's own schema decides; the error names the magic's option."""
        try:
            model.model_validate(arguments)
        except ValidationError as error:
            problems = []
            for item in error.errors():
                field = str(item["loc"][0]) if item["loc"] else ""
                if skip and field in skip:
                    continue
                option = OPTION_FOR_FIELD.get(field, field or "options")
                message = str(item["msg"]).removeprefix("Value error, ")
                problems.append(f"{option}: {message}")
            if problems:
                raise UsageError(f"%{magic}: " + "; ".join(problems)) from None

    def _start(self, tool: str, arguments: dict[str, Any], options: argparse.Namespace) -> Any:
        _check_out_name(options.out)  # before the job exists: a bad name starts nothing
        client = self.client
        try:
            structured = client.blocking(client.call_tool(tool, arguments))
        except GatewayCallError as error:
            self._report(error)
            return None
        handle = JobHandle.from_submit(client, structured)
        self._remember(handle, options.out)
        if options.wait:
            return self._wait(handle, quiet=options.quiet)
        if not options.quiet:
            self._show(handle)
        handle.mark_shown()
        handle.follow()
        return handle

    def _show(self, handle: JobHandle) -> None:
        handle.show()
        if not in_kernel():
            print(f"  (job.result() waits for the answer; %llm_job {handle.id} shows it again)")
        handle.mark_shown()

    def _wait(self, handle: JobHandle, *, quiet: bool) -> Any:
        printer: Callable[[JobHandle, list[dict[str, Any]]], None] | None = None
        if not quiet:
            handle.show(show_answer=False)
            if not in_kernel():

                def printer(h: JobHandle, events: list[dict[str, Any]]) -> None:
                    for event in events:
                        print(progress_line(h, event))

                handle.add_listener(printer)
        handle.mark_shown()
        try:
            handle.wait()
        except KeyboardInterrupt:
            print(
                f"Stopped waiting for job {handle.id}; it keeps running "
                f"(%llm_job {handle.id} shows it, %llm_result {handle.id} --wait collects it)."
            )
            handle.follow()
            return None
        except GatewayCallError as error:
            self._report(error)
            return None
        finally:
            if printer is not None:
                handle.remove_listener(printer)
        handle.follow()  # the raw log and late events still reach the widget
        return handle.current_result()

    def _remember(self, handle: JobHandle, out: str | None) -> None:
        self.last_handle = handle
        if out and self.shell is not None:
            self.shell.user_ns[out] = handle

    def _known_handles(self, job_id: str | None) -> list[JobHandle]:
        if job_id is None or self.shell is None:
            return []
        found = [v for v in self.shell.user_ns.values() if isinstance(v, JobHandle)]
        if self.last_handle is not None:
            found.append(self.last_handle)
        unique = {id(h): h for h in found if h.id == job_id}
        return list(unique.values())

    def _handle_for(self, job_id: str) -> JobHandle:
        known = self._known_handles(job_id)
        return known[0] if known else JobHandle.attach(self.client, job_id)

    def _job_id(self, ref: str | None) -> str:
        """A job id, a variable holding a handle, or (when absent) the last job started here."""
        if ref is None:
            if self.last_handle is None:
                raise UsageError("no job started here yet: give a job ID")
            return self.last_handle.id
        value = self.shell.user_ns.get(ref) if self.shell is not None else None
        if isinstance(value, JobHandle):
            return value.id
        return ref

    def _resolve_session(self, ref: str) -> str:
        """SESSION of %codex_fork: a handle variable, a job id, or a session id."""
        value = self.shell.user_ns.get(ref) if self.shell is not None else None
        if isinstance(value, JobHandle):
            return value._session_for_fork()
        if isinstance(value, JobResult) and value.session_id:
            return value.session_id
        try:
            job = self.client.blocking(self.client.get_job(ref))
        except GatewayCallError as error:
            if error.category == "not_found":
                return ref  # not a job: a session id
            raise
        return JobHandle(self.client, job)._session_for_fork()

    def _approval_id(self, ref: str) -> str:
        value = self.shell.user_ns.get(ref) if self.shell is not None else None
        job_id = value.id if isinstance(value, JobHandle) else ref
        for approval in self.client.blocking(self.client.approvals("pending")):
            if approval["id"] == ref or approval.get("job_id") == job_id:
                return str(approval["id"])
        if isinstance(value, JobHandle):
            raise GatewayCallError("not_found", f"job {job_id} has no pending approval")
        return ref  # let the gateway say what it is

    @staticmethod
    def _no_extra(magic: str, rest: str) -> None:
        if rest.strip():
            raise UsageError(f"%{magic}: unexpected argument {rest.strip()!r}")

    @staticmethod
    def _report(error: GatewayCallError) -> None:
        """Gateway refusals are answers, not crashes: one clear line, no traceback."""
        message = error.message
        if error.field and error.field in OPTION_FOR_FIELD and error.category == "invalid_input":
            message = f"{OPTION_FOR_FIELD[error.field]}: {message}"
        label = {
            "policy_denied": "refused by policy",
            "rate_limited": "rate limited",
            "saturated": "the gateway is busy",
            "spawn_error": "cannot start Codex",
            "not_found": "not found",
            "unreachable": "gateway unreachable",
        }.get(error.category, error.category)
        print(f"llmgw: {label}: {message}", file=sys.stderr)


# -- tables -------------------------------------------------------------------------------------
PROMPT_CHARS = 60
CELL_STYLE = "text-align:left;vertical-align:top;color:var(--jp-ui-font-color1)"


class JobTable:
    """``%llm_jobs``: an HTML table in a notebook, aligned text in a terminal.

    The time column is the job's age (since it was created), its tooltip how long it ran:
    the same as the lab panel's.
    """

    COLUMNS = ("id", "status", "age", "prompt", "session")

    def __init__(self, jobs: Sequence[Mapping[str, Any]], total: int) -> None:
        self.jobs = list(jobs)
        self.total = total
        self.taken_at = time.time()

    def rows(self) -> list[tuple[str, ...]]:
        return [
            (
                str(job["id"]),
                describe_state(job).text,
                job_age(job, self.taken_at),
                one_line(str(job.get("prompt_preview") or ""), PROMPT_CHARS),
                str(job.get("session_id") or ""),
            )
            for job in self.jobs
        ]

    def _repr_html_(self) -> str:
        head = "".join(f'<th style="{CELL_STYLE}">{c}</th>' for c in self.COLUMNS)
        body = []
        for job, row in zip(self.jobs, self.rows(), strict=True):
            ident, state, age, prompt, session = (escape_text(cell) for cell in row)
            duration = escape_text(job_duration(job, self.taken_at))
            full_prompt = escape_text(job.get("prompt_preview") or "")
            body.append(
                f'<tr data-job-id="{ident}">'
                f'<td style="{CELL_STYLE}"><code>{ident}</code></td>'
                f'<td style="{CELL_STYLE}" data-status="{escape_text(job["status"])}">{state}</td>'
                f'<td style="{CELL_STYLE}" class="llmgw-age" title="{duration}">{age}</td>'
                f'<td style="{CELL_STYLE}" title="{full_prompt}">{prompt}</td>'
                f'<td style="{CELL_STYLE}"><code>{session}</code></td></tr>'
            )
        taken = escape_text(local_time(self.taken_at))
        return (
            f'<table class="llmgw-jobs"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
            f'<small style="{TEXT_STYLE}">{len(self.jobs)} of {self.total} jobs, updated '
            f"{taken}; age is since the job was created, hover it for how long it ran</small>"
        )

    def follow(self, client: GatewayClient, shown: Any) -> None:
        """Keep the shown table current: each job still active is followed (the gateway's
        long-poll) until it ends, and every change of state updates the output."""
        for index, job in enumerate(self.jobs):
            if job["status"] in ACTIVE_STATUSES:
                self._spawn(self._follow_row(client, shown, index))

    async def _follow_row(self, client: GatewayClient, shown: Any, index: int) -> None:
        job = self.jobs[index]
        after = int(job.get("last_seq") or 0)
        failures = 0
        while job["status"] in ACTIVE_STATUSES:
            try:
                _, fresh = await client.wait_events(str(job["id"]), after, MAX_WAIT_SECONDS)
            except GatewayCallError:
                if failures >= len(RETRY_DELAYS):
                    return  # the table stays as it was; %llm_jobs again asks anew
                await asyncio.sleep(RETRY_DELAYS[failures])
                failures += 1
                continue
            failures = 0
            after = int(fresh.get("last_seq") or after)
            if fresh["status"] != job["status"]:
                self.jobs[index] = job = fresh
                self.taken_at = time.time()
                update_display(shown, self)

    @staticmethod
    def _spawn(coro: Coroutine[Any, Any, None]) -> None:
        spawn(coro)

    def __repr__(self) -> str:
        rows = [self.COLUMNS, *self.rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self.COLUMNS))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
        ]
        lines.append(f"({len(self.jobs)} of {self.total} jobs)")
        return "\n".join(line.rstrip() for line in lines)


def approvals_text(approvals: Sequence[Mapping[str, Any]]) -> str:
    """The terminal form of ``%llm_approvals``: the widget's words, expiry with its clock time."""
    if not approvals:
        return "no pending approvals"
    lines = []
    for approval in approvals:
        prompt = one_line(str((approval.get("arguments") or {}).get("prompt") or ""), PROMPT_CHARS)
        expiry = ""
        moment = timestamp(approval.get("expires_at"))
        if approval.get("status") == "pending" and moment is not None:
            expiry = f"  {expiry_text(approval.get('expires_at'))} ({local_time(moment)})"
        lines.append(
            f"{approval['id']}  {decision_text(approval)}  requested by {approval['caller']}  "
            f"{approval['tool']}  job {approval.get('job_id')}{expiry}  {prompt!r}"
        )
    lines.append("decide with %llm_approvals --approve ID or --deny ID")
    return "\n".join(lines)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext llmgw_jupyter``: register the magics (the gateway is chosen on first use)."""
    magics = LLMGatewayMagics(ipython)
    ipython.register_magics(magics)
    for provider in MAGIC_PROVIDERS[1:]:
        for suffix, run in (("async", magics._request_magic), ("fork", magics._fork_magic)):
            if f"{provider}_{suffix}" in PARSERS:
                ipython.register_magic_function(
                    _provider_magic(run, provider), "line_cell", f"{provider}_{suffix}"
                )


def _provider_magic(
    run: Callable[[str, str, str | None], Any], provider: str
) -> Callable[[str, str | None], Any]:
    """``%<provider>_async`` / ``_fork`` of an installed provider, like Codex's."""

    def magic(line: str, cell: str | None = None) -> Any:
        return run(provider, line, cell)

    magic.__doc__ = f"See %{provider}_async --help or %{provider}_fork --help."
    return no_var_expand(magic)


def unload_ipython_extension(ipython: Any) -> None:
    """Outputs stop being updated again from later cells; jobs belong to the gateway, not to
    the kernel, so they go on."""
    uninstall_resend(ipython)


def _check_out_name(out: str | None) -> None:
    if out and not out.isidentifier():
        raise UsageError(f"--out: {out!r} is not a valid variable name")

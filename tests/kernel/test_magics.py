"""Magic argument handling in isolation: option splitting, interpolation, errors, help."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from llmgw_jupyter.kernel.client import GatewayCallError
from llmgw_jupyter.kernel.magics import (
    PARSERS,
    LLMGatewayMagics,
    _HelpShown,
    interpolate,
    magic_inputs,
    parse,
    split_all,
    split_options,
)

FAKE_PROVIDER = "llmgw_jupyter.testing.fake_provider:FakeProvider"
CODEX_INPUTS = magic_inputs("codex")[1]
CodexRequestAsyncInput = CODEX_INPUTS.request_async
CodexForkInput = CODEX_INPUTS.fork

NS = {"n": 3, "name": "world", "items": ["a", "b"], "pi": 3.14159, "boom": lambda: 1 / 0}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello {name}", "hello world"),
        ("{n * 2} and {len(items)}", "6 and 2"),
        ("{items!r} {pi:.2f}", "['a', 'b'] 3.14"),
        ("literal {{braces}} and }} alone", "literal {braces} and } alone"),
        ("kept {undefined} as written", "kept {undefined} as written"),
        ("code { return 1; } stays", "code { return 1; } stays"),
        ("json {'a': {'b': n}} kept", "json {'a': {'b': n}} kept"),
        ("a dict { {'a': n} } filled", "a dict {'a': 3} filled"),
        ("empty {} and { } stay", "empty {} and { } stay"),
        ("unclosed {name", "unclosed {name"),
        ("what's $HOME and 'quotes'", "what's $HOME and 'quotes'"),
    ],
)
def test_interpolate_fills_expressions_like_f_strings_and_keeps_the_rest(
    text: str, expected: str
) -> None:
    assert interpolate(text, NS) == expected


def test_interpolate_reports_a_failing_expression_in_one_line() -> None:
    with pytest.raises(UsageError, match=r"\{boom\(\)\} in the prompt: ZeroDivisionError"):
        interpolate("value {boom()}", NS)


def test_interpolate_does_not_change_the_namespace() -> None:
    namespace = dict(NS)
    interpolate("{n}", namespace)
    assert namespace == NS


@pytest.mark.parametrize(
    ("line", "tokens", "rest"),
    [
        ("--model m --wait Explain it's {x}", ["--model", "m", "--wait"], "Explain it's {x}"),
        ('--cd "/a dir/x" prompt', ["--cd", "/a dir/x"], "prompt"),
        ("--timeout=30 --quiet  two  spaces", ["--timeout=30", "--quiet"], "two  spaces"),
        ("-- --looks-like-an-option", [], "--looks-like-an-option"),
        ("plain prompt --model not-an-option", [], "plain prompt --model not-an-option"),
        ("--add-dir a --add-dir b p", ["--add-dir", "a", "--add-dir", "b"], "p"),
        ("--frob x", ["--frob"], "x"),
        ("", [], ""),
    ],
)
def test_split_options_takes_leading_options_and_leaves_the_prompt_verbatim(
    line: str, tokens: list[str], rest: str
) -> None:
    assert split_options(line, PARSERS["codex_async"]) == (tokens, rest)


def test_split_options_refuses_an_unclosed_quote() -> None:
    with pytest.raises(UsageError, match="unclosed"):
        split_options('--cd "/open prompt', PARSERS["codex_async"])


def test_option_values_are_interpolated_too() -> None:
    options, rest = parse("codex_async", "--cd {name}/x --timeout {n*10} go {name}", NS)
    assert options.cd == "world/x"
    assert options.timeout == 30.0
    assert rest == "go {name}", "the prompt is filled later, by the magic"


@pytest.mark.parametrize(
    ("magic", "line", "message"),
    [
        ("codex_async", "--sandbox nope x", "argument --sandbox: invalid choice: 'nope'"),
        ("codex_async", "--timeout soon x", "argument --timeout: invalid float value: 'soon'"),
        ("codex_async", "--wiat x", "unrecognized arguments: --wiat"),
        ("codex_async", "--mod gpt x", "unrecognized arguments: --mod"),
        ("llm_jobs", "--limit x", "argument --limit: invalid int value: 'x'"),
        ("llm_job", "a b", "unrecognized arguments: b"),
    ],
)
def test_parse_errors_are_usage_errors_naming_the_option(
    magic: str, line: str, message: str
) -> None:
    with pytest.raises(UsageError) as raised:
        parse(magic, line)
    text = str(raised.value)
    assert text.startswith(f"%{magic}: ") and message in text
    assert "\n" not in text


@pytest.mark.parametrize("magic", sorted(PARSERS))
def test_help_prints_usage_and_ends_quietly(magic: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(_HelpShown):
        parse(magic, "--help")
    assert capsys.readouterr().out.startswith(f"usage: %{magic}")


def test_codex_option_help_and_choices_come_from_the_tool_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(_HelpShown):
        parse("codex_async", "-h")
    help_text = " ".join(capsys.readouterr().out.split())
    fields = CodexRequestAsyncInput.model_fields
    for field in ("timeout_seconds", "idempotency_key", "session_id", "working_dir"):
        description = fields[field].description
        assert description is not None
        assert " ".join(description.split()) in help_text
    assert "{read-only,workspace-write,danger-full-access}" in help_text
    with pytest.raises(_HelpShown):
        parse("codex_fork", "-h")
    description = CodexForkInput.model_fields["last"].description
    assert description is not None
    assert " ".join(description.split()) in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("category", "label"),
    [
        ("policy_denied", "refused by policy"),
        ("rate_limited", "rate limited"),
        ("saturated", "the gateway is busy"),
        ("spawn_error", "cannot start Codex"),
        ("unreachable", "gateway unreachable"),
        ("conflict", "conflict"),
    ],
)
def test_gateway_errors_print_one_labelled_line_on_stderr(
    category: str, label: str, capsys: pytest.CaptureFixture[str]
) -> None:
    LLMGatewayMagics._report(GatewayCallError(category, "the details"))
    captured = capsys.readouterr()
    assert captured.err == f"llmgw: {label}: the details\n"
    assert captured.out == ""


def test_an_invalid_field_from_the_gateway_is_named_as_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = GatewayCallError("invalid_input", "working_dir: does not exist", field="working_dir")
    LLMGatewayMagics._report(error)
    assert capsys.readouterr().err == "llmgw: invalid_input: --cd: working_dir: does not exist\n"


def test_split_all_is_shell_splitting_with_a_one_line_error() -> None:
    assert split_all("""a 'b c' "d \\"e\\"" """) == ["a", "b c", 'd "e"']
    with pytest.raises(UsageError, match="No closing quotation"):
        split_all("'open")


def test_every_installed_provider_gets_magics_from_its_own_input_models(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from llmgw_jupyter.kernel import magics
    from llmgw_jupyter.providers.registry import installed_providers

    installed = {**installed_providers(), "fake": FAKE_PROVIDER}
    monkeypatch.setattr(magics, "installed_providers", lambda: installed)
    monkeypatch.setattr(magics, "MAGIC_PROVIDERS", ("codex", "fake"))
    for name, parser in magics._build_provider_parsers("fake").items():
        monkeypatch.setitem(magics.PARSERS, name, parser)
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell(config=config)
    magics.load_ipython_extension(shell)
    assert {"fake_async", "fake_fork"} <= set(shell.magics_manager.magics["cell"])

    shell.run_line_magic("fake_async", "--help")
    usage = capsys.readouterr().out
    assert usage.startswith("usage: %fake_async") and "--cd DIR" in usage
    assert "--sandbox" not in usage, "Codex's options are Codex's"
    with pytest.raises(UsageError, match=r"%fake_async: --model: model must be a slug"):
        shell.run_line_magic("fake_async", "--model 'no slug' hello")

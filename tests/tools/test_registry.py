"""The tool registry: each tool defined once, its JSON Schema derived from its pydantic model, its
MCP annotations, and argument validation errors that name the field and the rule.

Validation goes through ``Gateway.call`` (the only way in): a refused call never reaches a handler,
so no job is created.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from llmgw_jupyter.providers.codex import MAX_PROMPT_CHARS
from llmgw_jupyter.tools import REGISTRY, TOOL_NAMES, TOOLS
from llmgw_jupyter.tools.registry import JOB_STARTING_TOOLS
from tools.gateway_harness import MINIMAL_ARGUMENTS, Harness

CODEX_TOOLS = ("codex_request", "codex_request_async", "codex_fork_session")
READ_ONLY_TOOLS = (
    "llm_job_status",
    "llm_job_watch",
    "llm_job_result",
    "llm_job_list",
    "llm_session_list",
)
CODEX_ARGUMENTS = {
    "prompt",
    "model",
    "sandbox",
    "working_dir",
    "add_dirs",
    "config_overrides",
    "output_schema",
    "timeout_seconds",
    "idempotency_key",
}


# -- the registry ---------------------------------------------------------------------------
def test_the_registry_holds_each_tool_of_the_issue_exactly_once() -> None:
    claude_tools = ("claude_request", "claude_request_async", "claude_fork_session")
    assert sorted(TOOL_NAMES) == sorted(
        (*CODEX_TOOLS, *claude_tools, *READ_ONLY_TOOLS, "llm_job_cancel")
    )
    assert len(TOOLS) == len(REGISTRY) == len(TOOL_NAMES)
    assert all(REGISTRY[tool.name] is tool for tool in TOOLS)
    assert all(tool.description and tool.title for tool in TOOLS)
    assert (
        frozenset(
            {
                "codex_request_async",
                "codex_fork_session",
                "claude_request_async",
                "claude_fork_session",
            }
        )
        == JOB_STARTING_TOOLS
    )


@pytest.mark.parametrize("name", TOOL_NAMES)
def test_each_input_schema_is_its_pydantic_models_json_schema(name: str) -> None:
    tool = REGISTRY[name]
    schema = tool.input_schema
    assert schema == tool.input_model.model_json_schema()
    assert tool.output_schema == tool.output_model.model_json_schema()
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False  # unknown fields are refused, as advertised
    assert set(schema["properties"]) == set(tool.input_model.model_fields)
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", CODEX_TOOLS)
def test_codex_tools_take_the_codex_arguments_of_the_issue(name: str) -> None:
    schema = REGISTRY[name].input_schema
    assert set(schema["properties"]) >= CODEX_ARGUMENTS | {"session_id"}
    assert schema["required"] == ["prompt"]
    assert schema["properties"]["prompt"]["maxLength"] == MAX_PROMPT_CHARS
    assert schema["properties"]["sandbox"]["enum"] == [
        "read-only",
        "workspace-write",
        "danger-full-access",
    ]
    assert schema["properties"]["sandbox"]["default"] == "read-only"


def test_only_codex_request_waits_and_only_the_fork_takes_last() -> None:
    request = REGISTRY["codex_request"].input_schema["properties"]
    assert request["wait_seconds"]["default"] == 45
    assert "last" in REGISTRY["codex_fork_session"].input_schema["properties"]
    assert "wait_seconds" not in REGISTRY["codex_request_async"].input_schema["properties"]
    assert "last" not in request


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("codex_request", {"prompt": "x", "bogus": 1}),
        ("codex_request", {"prompt": "x", "sandbox": "root"}),
        ("codex_request", {}),
        ("llm_job_status", {"job_id": "../etc"}),
        ("llm_job_list", {"limit": 0}),
    ],
)
def test_the_served_schema_refuses_what_the_gateway_refuses(
    name: str, arguments: dict[str, Any]
) -> None:
    """A client validating against the schema sees the same refusal the gateway gives."""
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(arguments, REGISTRY[name].input_schema)


# -- annotations ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", READ_ONLY_TOOLS)
def test_reading_tools_are_read_only_idempotent_and_closed_world(name: str) -> None:
    assert REGISTRY[name].annotations.to_dict() == {
        "readOnlyHint": True,
        "destructiveHint": False,
        "idempotentHint": True,
        "openWorldHint": False,
    }


@pytest.mark.parametrize("name", CODEX_TOOLS)
def test_codex_tools_are_not_read_only(name: str) -> None:
    """Codex as an MCP client runs readOnlyHint tools unprompted: an agent run must not be one."""
    hints = REGISTRY[name].annotations.to_dict()
    assert hints["readOnlyHint"] is False
    assert hints["openWorldHint"] is True
    assert hints["idempotentHint"] is False


def test_cancel_changes_state_but_repeating_it_is_harmless() -> None:
    hints = REGISTRY["llm_job_cancel"].annotations.to_dict()
    assert hints["readOnlyHint"] is False
    assert hints["destructiveHint"] is True
    assert hints["idempotentHint"] is True


# -- validation through the chokepoint ------------------------------------------------------
@pytest.fixture
async def gateway(fake_gateway: Harness) -> Harness:
    """Arguments are refused before any job starts: Codex's own validation over the fake CLI
    is enough, so these run with no codex binary."""
    return fake_gateway


async def refused(harness: Harness, tool: str, arguments: dict[str, Any], field: str | None) -> str:
    """Call, insist on an invalid_input refusal naming ``field``; return its message."""
    result = await harness.call(tool, arguments)
    assert result.is_error
    assert result.error == "invalid_input"
    assert result.structured is not None
    error = result.structured["error"]
    assert error["category"] == "invalid_input"
    assert error["field"] == field
    assert result.text == f"invalid_input: {error['message']}"
    _, total = harness.runtime.list_jobs()
    assert total == 0, "a refused call must never reach a handler"
    message: str = error["message"]
    return message


@pytest.mark.parametrize("name", TOOL_NAMES)
async def test_unknown_fields_are_refused_naming_them(gateway: Harness, name: str) -> None:
    arguments = {**MINIMAL_ARGUMENTS[name], "surprise": 1, "also_unknown": True}
    message = await refused(gateway, name, arguments, field="surprise")
    assert message == (
        "surprise: unknown field, not accepted; also_unknown: unknown field, not accepted"
    )


async def test_a_missing_prompt_is_named(gateway: Harness) -> None:
    message = await refused(gateway, "codex_request_async", {}, field="prompt")
    assert message == "prompt: Field required"


async def test_a_prompt_over_the_size_bound_is_refused(gateway: Harness) -> None:
    message = await refused(
        gateway, "codex_request", {"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, field="prompt"
    )
    assert message == f"prompt: String should have at most {MAX_PROMPT_CHARS} characters"


async def test_a_prompt_at_the_size_bound_passes_validation(fake_gateway: Harness) -> None:
    out = await fake_gateway.ok("codex_request_async", {"prompt": "x" * MAX_PROMPT_CHARS})
    assert out["job"]["args"]["prompt"] == "x" * MAX_PROMPT_CHARS


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
async def test_an_empty_or_blank_prompt_is_refused(gateway: Harness, prompt: str) -> None:
    message = await refused(gateway, "codex_request_async", {"prompt": prompt}, field="prompt")
    assert message.startswith("prompt: ")
    assert "blank" in message or "at least 1 character" in message


async def test_a_prompt_with_a_nul_character_is_refused(gateway: Harness) -> None:
    message = await refused(gateway, "codex_request", {"prompt": "a\x00b"}, field="prompt")
    assert message == "prompt: prompt must not contain NUL characters"


async def test_a_sandbox_outside_the_enum_is_refused_listing_the_choices(gateway: Harness) -> None:
    message = await refused(
        gateway, "codex_request", {"prompt": "x", "sandbox": "root"}, field="sandbox"
    )
    assert message == (
        "sandbox: Input should be 'read-only', 'workspace-write' or 'danger-full-access'"
    )


@pytest.mark.parametrize("tool", CODEX_TOOLS)
async def test_a_working_dir_that_looks_like_an_option_is_refused(
    gateway: Harness, tool: str
) -> None:
    arguments: dict[str, Any] = {"prompt": "x", "working_dir": "-x"}
    if tool == "codex_fork_session":
        arguments["last"] = True
    message = await refused(gateway, tool, arguments, field="working_dir")
    assert message == "working_dir: a path must not start with '-'"


async def test_an_extra_dir_that_looks_like_an_option_is_refused(gateway: Harness) -> None:
    message = await refused(
        gateway, "codex_request", {"prompt": "x", "add_dirs": ["/tmp", "--yolo"]}, "add_dirs"
    )
    assert message == "add_dirs: a path must not start with '-'"


@pytest.mark.parametrize(
    "key", ["sandbox_mode", "approval_policy", "model_providers.evil.base_url", "mcp_servers.x"]
)
async def test_config_overrides_may_not_set_reserved_keys(gateway: Harness, key: str) -> None:
    """Keys outside the allow list (here ones that would change the sandbox, approvals, the
    endpoint or tools) are refused, naming the key."""
    message = await refused(
        gateway,
        "codex_request_async",
        {"prompt": "x", "config_overrides": {key: "danger-full-access"}},
        field="config_overrides",
    )
    assert message.startswith(f"config_overrides: '{key}' is not an allowed Codex config key")


@pytest.mark.parametrize("key", ["-c", "a b", "x=y", "a..b", ""])
async def test_config_override_keys_must_be_dotted_names(gateway: Harness, key: str) -> None:
    message = await refused(
        gateway,
        "codex_request_async",
        {"prompt": "x", "config_overrides": {key: 1}},
        field="config_overrides",
    )
    assert "must be a dotted name" in message


@pytest.mark.parametrize(
    "arguments",
    [
        {"prompt": "fork it"},
        {"prompt": "fork it", "last": False},
        {"prompt": "fork it", "session_id": "abc", "last": True},
    ],
    ids=["neither", "last-false", "both"],
)
async def test_a_fork_needs_exactly_one_of_session_id_and_last(
    gateway: Harness, arguments: dict[str, Any]
) -> None:
    message = await refused(gateway, "codex_fork_session", arguments, field=None)
    assert message == "arguments: give exactly one of session_id or last: true"


@pytest.mark.parametrize(
    ("tool", "arguments", "field", "rule"),
    [
        ("codex_request", {"prompt": "x", "wait_seconds": -1}, "wait_seconds", "greater than"),
        ("codex_request", {"prompt": "x", "wait_seconds": 601}, "wait_seconds", "less than"),
        ("codex_request", {"prompt": "x", "timeout_seconds": 0}, "timeout_seconds", "greater"),
        ("codex_request", {"prompt": "x", "session_id": "-resume"}, "session_id", "start with"),
        ("codex_request", {"prompt": "x", "model": "gpt 5"}, "model", "slug"),
        ("llm_job_status", {"job_id": "../etc"}, "job_id", "pattern"),
        ("llm_job_watch", {"job_id": "a", "timeout_seconds": 31}, "timeout_seconds", "less"),
        ("llm_job_result", {"job_id": "a", "stream": "both"}, "stream", "'stdout' or 'stderr'"),
        ("llm_job_list", {"status": "done"}, "status", "'awaiting_approval'"),
        ("llm_job_list", {"limit": 501}, "limit", "less than or equal to 500"),
    ],
)
async def test_bad_values_name_the_field_and_the_rule(
    gateway: Harness, tool: str, arguments: dict[str, Any], field: str, rule: str
) -> None:
    message = await refused(gateway, tool, arguments, field=field)
    assert message.startswith(f"{field}: ")
    assert rule in message


async def test_several_problems_are_reported_together(gateway: Harness) -> None:
    message = await refused(
        gateway, "codex_request", {"prompt": "", "sandbox": "root", "bogus": 1}, field="prompt"
    )
    for field in ("prompt", "sandbox", "bogus"):
        assert f"{field}: " in message


async def test_an_unknown_tool_is_not_found(gateway: Harness) -> None:
    result = await gateway.call("codex_exec", {"prompt": "x"})
    assert result.is_error
    assert result.error == "not_found"
    assert result.structured == {
        "error": {"category": "not_found", "message": "unknown tool 'codex_exec'", "field": "tool"}
    }

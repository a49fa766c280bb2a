"""The provider registry: installed providers, configured ones, and clear configuration errors."""

from __future__ import annotations

from typing import Any

import pytest
from traitlets import TraitError

from llmgw_jupyter.providers.base import ProviderConfigError, ProviderSettings
from llmgw_jupyter.providers.codex import DEFAULT_ALLOWED_CONFIG_KEYS, CodexProvider
from llmgw_jupyter.providers.registry import (
    ENTRY_POINT_GROUP,
    build_providers,
    installed_providers,
)
from llmgw_jupyter.runtime import RuntimeConfig
from llmgw_jupyter.testing.fake_provider import FakeProvider
from llmgw_jupyter.tools import ToolRegistry, builtin_registry

FAKE = "llmgw_jupyter.testing.fake_provider:FakeProvider"


def test_codex_is_installed_through_the_entry_point_group() -> None:
    from importlib.metadata import entry_points

    points = {p.name: p.value for p in entry_points(group=ENTRY_POINT_GROUP)}
    assert points["codex"] == "llmgw_jupyter.providers.codex:CodexProvider"
    assert installed_providers()["codex"] == points["codex"]


def test_installed_providers_run_with_their_defaults_and_configured_ones_join_them() -> None:
    assert list(build_providers()) == ["codex", "claude"]  # both installed as entry points
    providers = build_providers(
        {"fake": ProviderSettings(class_ref=FAKE, options={"delay_seconds": 0.5})}
    )
    assert list(providers) == ["codex", "claude", "fake"]
    fake = providers["fake"]
    assert isinstance(fake, FakeProvider) and fake.delay_seconds == 0.5


def test_each_provider_is_built_from_its_own_settings(tmp_path: Any) -> None:
    providers = build_providers(
        {
            "codex": ProviderSettings(
                path="/opt/codex", home=str(tmp_path), options={"config_keys": ["tui.theme"]}
            )
        }
    )
    codex = providers["codex"]
    assert isinstance(codex, CodexProvider)
    assert codex.codex_home == str(tmp_path)
    assert codex.allowed_config_keys == DEFAULT_ALLOWED_CONFIG_KEYS | {"tui.theme"}


@pytest.mark.parametrize(
    ("settings", "setting", "says"),
    [
        ({"nope": ProviderSettings()}, "class", "no installed provider of that name"),
        ({"fake": ProviderSettings(class_ref="no_such_module:X")}, "class", "cannot import"),
        ({"fake": ProviderSettings(class_ref="llmgw_jupyter.errors:Nope")}, "class", "has no"),
        ({"fake": ProviderSettings(class_ref="llmgw_jupyter")}, "class", "'module:Class'"),
        (
            {"fake": ProviderSettings(class_ref="llmgw_jupyter.errors:GatewayError")},
            "class",
            "not a provider class",
        ),
        (
            {"other": ProviderSettings(class_ref=FAKE)},
            "class",
            "is the provider 'fake'; register it under that name",
        ),
        ({"Bad-Name": ProviderSettings(class_ref=FAKE)}, "name", "lowercase"),
        ({"codex": ProviderSettings(options={"colour": "red"})}, "options.colour", "unknown"),
        (
            {"codex": ProviderSettings(options={"config_keys": "tui.theme"})},
            "options.config_keys",
            "must be a list",
        ),
        (
            {"fake": ProviderSettings(class_ref=FAKE, options={"delay_seconds": -1})},
            "options.delay_seconds",
            ">= 0",
        ),
    ],
)
def test_bad_configuration_names_the_provider_and_the_setting(
    settings: dict[str, ProviderSettings], setting: str, says: str
) -> None:
    with pytest.raises(ProviderConfigError) as raised:
        build_providers(settings)
    [name] = settings
    assert raised.value.provider == name
    assert raised.value.setting == setting
    assert f"provider {name!r}, setting {setting!r}: " in str(raised.value)
    assert says in str(raised.value)


def test_the_codex_fields_of_runtime_config_fill_the_codex_settings() -> None:
    config = RuntimeConfig(codex_path="/x/codex", codex_home="/h", codex_config_keys=["a.b"])
    assert config.provider_settings["codex"] == ProviderSettings(
        path="/x/codex", home="/h", options={"config_keys": ["a.b"]}
    )
    assert RuntimeConfig().provider_settings == {}


def test_tools_are_built_per_provider() -> None:
    registry = ToolRegistry.for_providers(
        build_providers({"fake": ProviderSettings(class_ref=FAKE)})
    )
    assert registry.names == (
        "codex_request",
        "codex_request_async",
        "codex_fork_session",
        "claude_request",
        "claude_request_async",
        "claude_fork_session",
        "fake_request",
        "fake_request_async",
        "fake_fork_session",
        "llm_job_status",
        "llm_job_watch",
        "llm_job_result",
        "llm_job_cancel",
        "llm_job_list",
        "llm_session_list",
    )
    assert registry.job_starting == {
        "codex_request_async",
        "codex_fork_session",
        "claude_request_async",
        "claude_fork_session",
        "fake_request_async",
        "fake_fork_session",
    }
    assert registry.is_quick("fake_request_async") and not registry.is_quick("fake_request")
    assert not registry.is_quick("llm_job_watch") and not registry.is_quick("no_such_tool")
    fake = registry["fake_request_async"]
    assert fake.input_model.__name__ == "FakeRequestAsyncInput"
    assert set(fake.input_schema["properties"]) == {
        "prompt",
        "model",
        "working_dir",
        "timeout_seconds",
        "idempotency_key",
        "session_id",
    }
    assert "sandbox" in registry["codex_request_async"].input_schema["properties"]
    assert registry["llm_session_list"].description.startswith("Codex, Claude and Fake sessions")
    assert registry.light_arg_keys["fake"] == FakeProvider.tool_spec.light_arg_keys
    assert builtin_registry().names == tuple(n for n in registry.names if "fake" not in n)


def test_the_server_trait_refuses_a_bad_entry_naming_provider_and_setting() -> None:
    from llmgw_jupyter.server.app import LLMGatewayApp

    app = LLMGatewayApp()
    app.providers = {"fake": {"class": FAKE, "options": {"delay_seconds": 1}}}
    with pytest.raises(TraitError, match=r"provider 'fake', setting 'path'"):
        app.providers = {"fake": {"class": FAKE, "path": 3}}
    with pytest.raises(TraitError, match=r"provider 'fake', setting 'colour'"):
        app.providers = {"fake": {"class": FAKE, "colour": "red"}}
    with pytest.raises(TraitError, match=r"provider 'mystery', setting 'class'"):
        app.providers = {"mystery": {}}


def test_the_codex_traits_fill_what_the_codex_entry_leaves_unset(tmp_path: Any) -> None:
    from llmgw_jupyter.server.app import LLMGatewayApp

    app = LLMGatewayApp()
    app.codex_path = "/from/trait"
    app.codex_home = str(tmp_path / "home")
    app.codex_config_keys = ["tui.theme"]
    app.providers = {"codex": {"path": "/from/entry"}, "fake": {"class": FAKE}}
    settings = app._provider_settings()
    assert settings["codex"] == ProviderSettings(
        path="/from/entry", home=str(tmp_path / "home"), options={"config_keys": ["tui.theme"]}
    )
    assert settings["fake"].class_ref == FAKE


def test_a_provider_can_be_switched_off_and_a_provider_without_tools_is_refused() -> None:
    from llmgw_jupyter.providers.registry import provider_settings

    assert list(build_providers({"codex": ProviderSettings(enabled=False)})) == ["claude"]
    assert provider_settings("codex", {"enabled": False}) == ProviderSettings(enabled=False)
    with pytest.raises(ProviderConfigError, match="setting 'enabled': must be true or false"):
        provider_settings("codex", {"enabled": "no"})

    class Toolless:
        name = "toolless"

    with pytest.raises(TypeError, match="'toolless' declares no tool_spec"):
        ToolRegistry.for_providers([Toolless()])  # type: ignore[list-item]

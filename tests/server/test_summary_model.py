"""What GET summary says about the model: the bundled local echo model or another one."""

from __future__ import annotations

from pathlib import Path

from llmgw_jupyter.server.handlers import describe_codex_home
from llmgw_jupyter.testing.codex_home import write_codex_home


def test_the_echo_models_home_is_the_local_echo_model(tmp_path: Path) -> None:
    home = write_codex_home(tmp_path / "home", "http://127.0.0.1:8123/v1")
    assert describe_codex_home(home) == {"local_echo": True, "label": "local echo model"}


def test_a_mock_provider_elsewhere_is_not_local(tmp_path: Path) -> None:
    home = write_codex_home(tmp_path / "home", "https://models.example.com/v1", model="gpt-x")
    assert describe_codex_home(home) == {"local_echo": False, "label": "gpt-x"}


def test_another_provider_on_loopback_is_not_the_echo_model(tmp_path: Path) -> None:
    home = write_codex_home(tmp_path / "home", "http://localhost:9/v1", provider="ollama")
    assert describe_codex_home(home)["local_echo"] is False


def test_a_home_without_config_or_with_a_broken_one_says_nothing(tmp_path: Path) -> None:
    assert describe_codex_home(tmp_path) == {"local_echo": False, "label": ""}
    (tmp_path / "config.toml").write_text("model = [unclosed")
    assert describe_codex_home(tmp_path) == {"local_echo": False, "label": ""}
    (tmp_path / "config.toml").write_text(
        'model_provider = "mock"\n[model_providers.mock]\nbase_url = "http://[::1"\n'
    )
    assert describe_codex_home(tmp_path) == {"local_echo": False, "label": ""}

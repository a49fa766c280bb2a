"""Finding a CLI: remembered while it stays where it was found, looked for again otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmgw_jupyter.providers.base import ExecutableNotFoundError
from llmgw_jupyter.providers.codex import CODEX_PATH_ENV, find_codex


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_cli_on_path_is_found_again_after_it_moved_or_went(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = executable(tmp_path / "a" / "codex")
    monkeypatch.delenv(CODEX_PATH_ENV, raising=False)
    monkeypatch.setenv("PATH", f"{first.parent}{os.pathsep}{tmp_path / 'b'}")
    assert find_codex() == str(first)
    assert find_codex() == str(first)  # remembered

    first.chmod(0o644)  # no longer runnable: looked for again, found later on PATH
    second = executable(tmp_path / "b" / "codex")
    assert find_codex() == str(second)

    second.unlink()
    with pytest.raises(ExecutableNotFoundError, match="LLMGW_CODEX_PATH"):
        find_codex()


def test_a_changed_setting_or_variable_is_never_answered_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = executable(tmp_path / "one" / "codex")
    two = executable(tmp_path / "two" / "codex")
    monkeypatch.setenv(CODEX_PATH_ENV, str(one))
    assert find_codex() == str(one)
    monkeypatch.setenv(CODEX_PATH_ENV, str(two))
    assert find_codex() == str(two)
    assert find_codex(str(one)) == str(one)  # configuration first
    with pytest.raises(ExecutableNotFoundError, match="configuration"):
        find_codex(str(tmp_path / "missing"))

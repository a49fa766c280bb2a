"""Each operator, on matching, non-matching, missing and wrongly typed values."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from llmgw_jupyter.policy.conditions import compile_condition, json_equal, resolve, split_path
from llmgw_jupyter.policy.model import Condition


def evaluate(op: str, value: Any, args: dict[str, Any], path: str = "args.x") -> Any:
    condition = Condition.model_validate({"path": path, "op": op, "value": value})
    return compile_condition(condition, "/p").evaluate(args)


HOLDS = (True, None)
FAILS = (False, None)

CASES: list[tuple[str, Any, Any, Any]] = [
    # op, value, actual, expected
    ("eq", "read-only", "read-only", HOLDS),
    ("eq", "read-only", "workspace-write", FAILS),
    ("eq", 1, True, FAILS),  # JSON: true is not 1
    ("eq", 1, 1.0, HOLDS),
    ("eq", {"a": [1]}, {"a": [1]}, HOLDS),
    ("neq", "a", "b", HOLDS),
    ("neq", "a", "a", FAILS),
    ("neq", False, 0, HOLDS),
    ("in", ["a", "b"], "b", HOLDS),
    ("in", ["a", "b"], "c", FAILS),
    ("in", [1, 2], True, FAILS),
    ("in", [1, [2]], [2], HOLDS),
    ("not_in", ["a", "b"], "c", HOLDS),
    ("not_in", ["a", "b"], "a", FAILS),
    ("lt", 10, 9, HOLDS),
    ("lt", 10, 10, FAILS),
    ("lte", 10, 10, HOLDS),
    ("lte", 10, 10.5, FAILS),
    ("gt", 10, 11, HOLDS),
    ("gt", 10, 10, FAILS),
    ("gte", 10, 10, HOLDS),
    ("gte", 10, 9.99, FAILS),
    ("regex", "^gpt-5", "gpt-5-codex", HOLDS),
    ("regex", "codex", "gpt-5-codex", HOLDS),  # search, not full match
    ("regex", "^o3$", "o3-mini", FAILS),
    ("contains", "rm -rf", "please rm -rf /", HOLDS),
    ("contains", "rm -rf", "ls", FAILS),
    ("contains", "/tmp", ["/a", "/tmp"], HOLDS),
    ("contains", "/tmp", ["/a"], FAILS),
    ("contains", "key", {"key": 1}, HOLDS),
    ("contains", "key", {"other": 1}, FAILS),
    ("exists", True, "anything", HOLDS),
    ("exists", False, "anything", FAILS),
    ("max_length", 3, "abc", HOLDS),
    ("max_length", 3, "abcd", FAILS),
    ("max_length", 1, ["a", "b"], FAILS),
    ("max_length", 1, {"a": 1}, HOLDS),
]


@pytest.mark.parametrize(("op", "value", "actual", "expected"), CASES)
def test_operator(op: str, value: Any, actual: Any, expected: Any) -> None:
    assert evaluate(op, value, {"x": actual}) == expected


@pytest.mark.parametrize(
    ("op", "value"),
    [
        ("eq", "a"),
        ("neq", "a"),
        ("in", ["a"]),
        ("not_in", ["a"]),
        ("lt", 1),
        ("regex", "."),
        ("contains", "a"),
        ("max_length", 5),
        ("within", ["/"]),
    ],
)
@pytest.mark.parametrize("args", [{}, {"x": None}])
def test_missing_value_never_holds(op: str, value: Any, args: dict[str, Any]) -> None:
    assert evaluate(op, value, args) == FAILS


def test_exists_on_missing_and_default_value() -> None:
    assert evaluate("exists", False, {}) == HOLDS
    assert evaluate("exists", True, {"x": None}) == FAILS
    condition = Condition.model_validate({"path": "args.x", "op": "exists"})
    assert condition.value is True


@pytest.mark.parametrize(
    ("op", "value", "actual", "problem"),
    [
        ("lt", 5, "3", "is not a number"),
        ("gte", 5, True, "is not a number"),
        ("regex", "a", ["a"], "is not a string"),
        ("contains", "a", 5, "is not a string, list or object"),
        ("max_length", 5, 12345, "has no length"),
        ("within", ["/"], 5, "is not a path"),
        ("within", ["/"], "relative/path", "'relative/path' is not an absolute path"),
    ],
)
def test_wrong_type_cannot_be_evaluated(op: str, value: Any, actual: Any, problem: str) -> None:
    assert evaluate(op, value, {"x": actual}) == (False, problem)


def test_nested_paths_and_list_indices() -> None:
    args = {"a": {"b": [{"c": "deep"}]}, "flat": 1}
    assert resolve(args, split_path("args.a.b.0.c")) == "deep"
    assert evaluate("eq", "deep", args, "args.a.b.0.c") == HOLDS
    assert evaluate("exists", True, args, "args.a.b.1.c") == FAILS
    assert evaluate("exists", True, args, "args.flat.more") == FAILS


def test_json_equal() -> None:
    assert json_equal(True, True) and not json_equal(True, 1) and not json_equal(0, False)
    assert json_equal("a", "a") and json_equal(2, 2.0)


class TestWithin:
    @pytest.fixture
    def tree(self, tmp_path: Path) -> Path:
        (tmp_path / "projects" / "app").mkdir(parents=True)
        (tmp_path / "secrets").mkdir()
        (tmp_path / "projects" / "escape").symlink_to(tmp_path / "secrets")
        (tmp_path / "inside-link").symlink_to(tmp_path / "projects" / "app")
        return tmp_path

    def test_inside_and_outside(self, tree: Path) -> None:
        allowed = [str(tree / "projects")]
        assert evaluate("within", allowed, {"x": str(tree / "projects" / "app")}) == HOLDS
        assert evaluate("within", allowed, {"x": str(tree / "projects")}) == HOLDS
        assert evaluate("within", allowed, {"x": str(tree / "secrets")}) == FAILS
        # A sibling sharing the prefix is not inside.
        (tree / "projects-evil").mkdir()
        assert evaluate("within", allowed, {"x": str(tree / "projects-evil")}) == FAILS

    def test_symlinks_are_followed(self, tree: Path) -> None:
        allowed = [str(tree / "projects")]
        assert evaluate("within", allowed, {"x": str(tree / "projects" / "escape")}) == FAILS
        assert evaluate("within", allowed, {"x": str(tree / "inside-link")}) == HOLDS
        dotdot = str(tree / "projects" / "app" / ".." / ".." / "secrets")
        assert evaluate("within", allowed, {"x": dotdot}) == FAILS

    def test_path_that_does_not_resolve(self, tree: Path) -> None:
        missing = str(tree / "projects" / "nope")
        holds, problem = evaluate("within", [str(tree / "projects")], {"x": missing})
        assert not holds and problem is not None and "does not resolve" in problem

    def test_home_is_expanded_on_both_sides(
        self, tree: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HOME", str(tree))
        assert evaluate("within", ["~/projects"], {"x": "~/projects/app"}) == HOLDS
        assert evaluate("within", "~/projects", {"x": str(tree / "secrets")}) == FAILS

    def test_several_directories_and_list_values(self, tree: Path) -> None:
        allowed = [str(tree / "projects"), str(tree / "secrets")]
        both = [str(tree / "projects" / "app"), str(tree / "secrets")]
        assert evaluate("within", allowed, {"x": both}) == HOLDS
        assert evaluate("within", [str(tree / "projects")], {"x": both}) == FAILS

    def test_root_allows_everything_existing(self, tree: Path) -> None:
        assert evaluate("within", ["/"], {"x": os.fspath(tree)}) == HOLDS


def test_describe_is_readable() -> None:
    condition = Condition.model_validate(
        {"path": "args.sandbox", "op": "eq", "value": "danger-full-access"}
    )
    assert compile_condition(condition, "/p").describe() == 'args.sandbox eq "danger-full-access"'

"""Request-argument fields every provider shares, defined once as ``Annotated`` types.

Each provider's argument model lists its own fields in its own order (the order is the tool's
input JSON Schema, which callers see), so sharing is by field type, not by a base class: a type
here carries the bounds and the validator, the model adds the default and a description that
names its CLI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, ValidationError

from llmgw_jupyter.errors import InvalidInputError, input_error_from_validation

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_OUTPUT_SCHEMA_BYTES",
    "MAX_PROMPT_CHARS",
    "AddDirs",
    "IdempotencyKey",
    "ModelSlug",
    "OutputSchema",
    "Prompt",
    "SafeText",
    "TimeoutSeconds",
    "WorkingDir",
    "json_depth",
    "no_nul",
    "parse_args",
    "resolve_paths",
]

MAX_PROMPT_CHARS = 100_000
MAX_OUTPUT_SCHEMA_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32

SafeText = Annotated[str, StringConstraints(min_length=1, max_length=4096)]

_SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def no_nul(value: str, field: str) -> str:
    """NUL ends a C string: a CLI would see less than the gateway checked."""
    if "\x00" in value:
        raise ValueError(f"{field} must not contain NUL characters")
    return value


def _prompt(value: str) -> str:
    if not value.strip():
        raise ValueError("prompt must not be blank")
    return no_nul(value, "prompt")


def _path_value(value: str) -> str:
    """A path a CLI gets as an argument: never read as an option."""
    no_nul(value, "path")
    if value.startswith("-"):
        raise ValueError("a path must not start with '-'")
    return value


def _path_list(value: list[str]) -> list[str]:
    return [_path_value(item) for item in value]


def _slug(value: str) -> str:
    if not _SLUG_RE.match(value):
        raise ValueError("model must be a slug of letters, digits and . _ : / - (max 128)")
    return value


def json_depth(value: Any, level: int = 1) -> int:
    """Nesting depth of a JSON value, stopping early once it is past the limit."""
    if level > MAX_JSON_DEPTH:
        return level
    children: list[Any] = []
    if isinstance(value, dict):
        children = list(value.values())
    elif isinstance(value, list):
        children = value
    return max([level, *(json_depth(child, level + 1) for child in children)])


def _output_schema(value: dict[str, Any]) -> dict[str, Any]:
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"must be nested at most {MAX_JSON_DEPTH} levels deep")
    size = len(json.dumps(value, separators=(",", ":")))
    if size > MAX_OUTPUT_SCHEMA_BYTES:
        raise ValueError(f"must be at most {MAX_OUTPUT_SCHEMA_BYTES} bytes as JSON (got {size})")
    return value


# What the agent should do: bounded, not blank, no NUL.
Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS), AfterValidator(_prompt)]
# A model slug as Codex (and the fake CLI) name models.
ModelSlug = Annotated[str, AfterValidator(_slug)]
# The directory the CLI runs in; that it exists is checked by the provider's ``validate``.
WorkingDir = Annotated[str, Field(max_length=4096), AfterValidator(_path_value)]
# Extra directories the CLI may use (at most 16, none read as an option).
AddDirs = Annotated[list[SafeText], Field(max_length=16), AfterValidator(_path_list)]
# A JSON Schema for the final answer: bounded in depth and size.
OutputSchema = Annotated[dict[str, Any], AfterValidator(_output_schema)]
TimeoutSeconds = Annotated[
    float | None, Field(gt=0, le=86_400, description="Wall-clock limit for the job.")
]
IdempotencyKey = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=200,
        description="Repeat a submission safely: the same key returns the existing job.",
    ),
]


ArgsModel = TypeVar("ArgsModel", bound=BaseModel)


def parse_args(model: type[ArgsModel], args: Mapping[str, Any]) -> ArgsModel:
    """``args`` checked against ``model``: one error naming every bad field and its rule."""
    try:
        return model.model_validate(args)
    except ValidationError as error:
        raise input_error_from_validation(error) from None


def resolve_paths(values: dict[str, Any]) -> dict[str, Any]:
    """``working_dir`` (which must be a directory) and any ``add_dirs`` made absolute, so a job
    means the same directories whatever directory it starts in."""
    working_dir = values.get("working_dir")
    if working_dir is not None:
        resolved = Path(working_dir).expanduser()
        if not resolved.is_dir():
            raise InvalidInputError("working_dir", f"{working_dir} is not a directory")
        values["working_dir"] = str(resolved.resolve())
    if "add_dirs" in values:
        values["add_dirs"] = [str(Path(d).expanduser().resolve()) for d in values["add_dirs"]]
    return values

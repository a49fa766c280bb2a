"""Small fake coding-agent CLIs for runtime tests, and a Provider that runs them.

A fake CLI is a Python script written into a temporary directory: a fixed prelude that prints
Codex-like JSONL (so the real ``CodexStreamParser`` reads it) plus a test-specific body. Fakes
only stand in for behaviour the real CLI cannot be made to show on demand (crashes, hangs, floods,
stubborn children); everything the real CLI does is tested against the real CLI.

This module is imported by ``conftest.py`` and by the restart-recovery child process, so it has no
pytest dependency.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from llmgw_jupyter.errors import InvalidInputError
from llmgw_jupyter.providers.base import Command, Mounts
from llmgw_jupyter.providers.codex import CodexStreamParser

PRELUDE = '''\
import json, os, signal, subprocess, sys, time

sys.stdout.reconfigure(encoding="utf-8")  # Codex prints raw UTF-8 JSON

def emit(**event):
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\\n")
    sys.stdout.flush()

def start(thread_id="fake-thread-" + str(os.getpid())):
    emit(type="thread.started", thread_id=thread_id)
    emit(type="turn.started")

def note(**data):
    """An item event carrying test data (pids, markers) that tests read from the job's events."""
    emit(type="item.completed", item={"type": "note", **data})

def answer(text):
    emit(type="item.completed", item={"id": "item_0", "type": "agent_message", "text": text})

def complete(input_tokens=10, output_tokens=2):
    emit(type="turn.completed", usage={"input_tokens": input_tokens, "cached_input_tokens": 0,
         "output_tokens": output_tokens, "reasoning_output_tokens": 0})

def wait_for_gate():
    """Block until the test opens the gate file (the fake's own poll; tests never sleep)."""
    gate = os.environ["FAKE_GATE"]
    while not os.path.exists(gate):
        time.sleep(0.01)

def log(text):
    with open(os.environ["FAKE_LOG"], "a") as handle:
        handle.write(text + "\\n")

def sleep_forever():
    while True:
        time.sleep(3600)

PROMPT = sys.stdin.read()
'''

_ALLOWED_ARGS = {"prompt", "timeout_seconds", "working_dir", "idempotency_key", "session_id"}


def write_fake_cli(directory: Path, name: str, body: str) -> Path:
    """Write prelude + ``body`` as ``<directory>/<name>.py``; returns the script path."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / f"{name}.py"
    script.write_text(PRELUDE + "\n" + textwrap.dedent(body).strip() + "\n")
    return script


class FakeProvider:
    """Implements ``llmgw_jupyter.providers.base.Provider`` for a fake CLI script.

    ``argv`` may be given instead of a script (the benchmark uses ``/bin/sh -c printf``).
    """

    def __init__(
        self,
        script: Path | None = None,
        *,
        name: str = "fake",
        argv: list[str] | None = None,
        env: dict[str, str] | None = None,
        ready_error: Exception | None = None,
    ) -> None:
        if argv is None:
            if script is None:
                raise ValueError("a script or an argv is needed")
            argv = [sys.executable, "-I", "-S", str(script)]  # -S: no site import, faster start
        self.name = name
        self.argv = argv
        self.env = dict(env or {})
        self.ready_error = ready_error
        self.commands: list[Command] = []

    def check_ready(self) -> None:
        if self.ready_error is not None:
            raise self.ready_error

    def validate(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        for key in args:
            if key not in _ALLOWED_ARGS:
                raise InvalidInputError(key, "unknown field, not accepted")
        if not isinstance(args.get("prompt"), str) or not args["prompt"]:
            raise InvalidInputError("prompt", "a non-empty string is required")
        return dict(args)

    def build_command(
        self, kind: str, args: dict[str, Any], job_dir: Path, context: Any = None
    ) -> Command:
        env = {**self.env, "FAKE_JOB_DIR": str(job_dir)}
        # Inside the isolation boundary a fake needs its interpreter, its script and the
        # directory of its gate and log files.
        scripts = [os.path.dirname(a) for a in self.argv[1:] if os.path.isfile(a)]
        shared = [os.path.dirname(env[k]) for k in ("FAKE_GATE", "FAKE_LOG") if k in env]
        command = Command(
            argv=list(self.argv),
            stdin=args["prompt"].encode(),
            cwd=args.get("working_dir"),
            env=env,
            mounts=Mounts(
                writable=sorted(set(shared)),
                read_only=[sys.base_prefix, sys.prefix, *scripts],
            ),
            env_names=tuple(self.env),
        )
        self.commands.append(command)
        return command

    def protected_paths(self) -> list[str]:
        return []

    def new_parser(self) -> CodexStreamParser:
        return CodexStreamParser()


def fake_env(tmp: Path) -> dict[str, str]:
    """Gate and log paths a fake can use (``wait_for_gate()``, ``log()``)."""
    return {"FAKE_GATE": str(tmp / "gate"), "FAKE_LOG": str(tmp / "fake.log")}


def open_gate(env: dict[str, str]) -> None:
    Path(env["FAKE_GATE"]).touch()


def read_log(env: dict[str, str]) -> list[str]:
    path = Path(env["FAKE_LOG"])
    return path.read_text().splitlines() if path.exists() else []


def this_dir() -> str:
    return os.path.dirname(os.path.abspath(__file__))

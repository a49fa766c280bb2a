"""A tiny coding-agent CLI for tests: reads the prompt on stdin, prints JSON lines, keeps sessions.

Standard library only: it runs as ``python -I -S fake_cli.py`` (no site import), inside the
isolation boundary too. Answers are deterministic: ``echo: <prompt>`` (knobs removed), with the
number of earlier turns of the session. Knobs in the prompt, ``[fake:NAME=VALUE,...]``:

- ``delay=SECONDS``: wait before answering (also the ``--delay`` option)
- ``events=N``: N progress lines before the answer, ``step_delay=SECONDS`` between them
- ``fail`` or ``fail=MESSAGE``: an ``error`` line and exit code 1 (after the session line)
- ``hang``: start and never answer (until killed)
- ``usage=IN/OUT``: the token counts reported with the answer (default: words in, words out)

Sessions are files ``<home>/sessions/<id>.json`` holding the turns: ``--resume ID`` continues
one, ``--fork ID`` copies it to a new id and leaves the original byte for byte unchanged.

Lines: ``{"type": "session", "id", "parent"}``, ``{"type": "progress", "step", "of", "text"}``,
``{"type": "answer", "text", "usage": {"input_tokens", "output_tokens"}}``,
``{"type": "error", "message"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

KNOBS_RE = re.compile(r"\[fake:([^\]]*)\]")
SESSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def knobs(prompt: str) -> dict[str, str]:
    """Every ``[fake:a=1,b]`` in the prompt as {"a": "1", "b": ""}."""
    found: dict[str, str] = {}
    for group in KNOBS_RE.findall(prompt):
        for item in group.split(","):
            name, _, value = item.strip().partition("=")
            if name:
                found[name] = value
    return found


def answer_text(prompt: str, earlier_turns: int) -> str:
    """The deterministic answer: the prompt without knobs, and the session's depth."""
    text = " ".join(KNOBS_RE.sub("", prompt).split())
    return f"echo: {text}" + (f" (after {earlier_turns} turns)" if earlier_turns else "")


def emit(**line: Any) -> None:
    """One JSON line in raw UTF-8, as real CLIs print (whatever the locale says)."""
    sys.stdout.buffer.write((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
    sys.stdout.buffer.flush()


def _session_file(home: Path, session_id: str) -> Path:
    if not SESSION_RE.match(session_id):
        raise SystemExit(f"fake_cli: bad session id {session_id!r}")
    return home / "sessions" / f"{session_id}.json"


def _load_turns(home: Path, session_id: str) -> list[dict[str, str]]:
    path = _session_file(home, session_id)
    try:
        turns = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"fake_cli: no session {session_id}") from None
    return list(turns)


def _save_turns(home: Path, session_id: str, turns: list[dict[str, str]]) -> None:
    path = _session_file(home, session_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(turns), encoding="utf-8")
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fake_cli")
    parser.add_argument("--home", required=True, help="where sessions are kept")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--resume", metavar="ID")
    source.add_argument("--fork", metavar="ID")
    parser.add_argument("--model", default="fake-1")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    home = Path(args.home)
    prompt = sys.stdin.read()
    knob = knobs(prompt)

    parent = None
    if args.resume:
        session_id, turns = args.resume, _load_turns(home, args.resume)
    elif args.fork:
        parent, turns = args.fork, _load_turns(home, args.fork)
        session_id = str(uuid.uuid4())
    else:
        session_id, turns = str(uuid.uuid4()), []
    emit(type="session", id=session_id, parent=parent, model=args.model)

    if "fail" in knob:
        emit(type="error", message=knob["fail"] or "the fake model failed")
        return 1
    if "hang" in knob:
        while True:
            time.sleep(3600)
    time.sleep(float(knob.get("delay") or args.delay))
    steps = int(knob.get("events") or 0)
    for step in range(1, steps + 1):
        emit(type="progress", step=step, of=steps, text=f"step {step} of {steps}")
        if step < steps:
            time.sleep(float(knob.get("step_delay") or 0))
    text = answer_text(prompt, len(turns))
    if knob.get("usage"):
        used_in, _, used_out = knob["usage"].partition("/")
        usage = {"input_tokens": int(used_in), "output_tokens": int(used_out or 0)}
    else:
        usage = {"input_tokens": len(prompt.split()), "output_tokens": len(text.split())}
    _save_turns(home, session_id, [*turns, {"prompt": prompt, "answer": text}])
    emit(type="answer", text=text, usage=usage)
    return 0


if __name__ == "__main__":
    sys.exit(main())

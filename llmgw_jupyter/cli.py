"""The ``llmgw`` command: grants, policy checks, the offline echo model and a runtime demo.

argparse keeps this dependency-free; each group registers its own subcommands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from llmgw_jupyter import policy_cli
from llmgw_jupyter.errors import GatewayError
from llmgw_jupyter.paths import resolve_data_dir


def _policy_store(data_dir: str | None) -> Any:
    from llmgw_jupyter.store.db import Database
    from llmgw_jupyter.store.policy import PolicyStore

    return PolicyStore(Database(resolve_data_dir(data_dir) / "llmgw.sqlite3"))


def _grant_create(args: argparse.Namespace) -> int:
    from llmgw_jupyter.grants import create_grant

    policy = json.loads(Path(args.policy).read_text()) if args.policy else None
    record, token = create_grant(_policy_store(args.data_dir), args.name, policy)
    print(f"grant {record.name} created; its token (shown once, store it now):")
    print(token)
    if policy is None:
        print(
            "note: no --policy given: this grant is refused every tool until it has one",
            file=sys.stderr,
        )
    return 0


def _grant_list(args: argparse.Namespace) -> int:
    for grant in _policy_store(args.data_dir).list_grants():
        view = grant.to_dict()
        state = "active" if grant.active else f"revoked {view['revoked_at']}"
        tools = sorted((grant.policy or {}).get("tools", {})) if grant.policy else "no policy"
        print(f"{grant.name}\t{state}\tcreated {view['created_at']}\ttools: {tools}")
    return 0


def _grant_revoke(args: argparse.Namespace) -> int:
    from llmgw_jupyter.grants import revoke_grant

    revoke_grant(_policy_store(args.data_dir), args.name)
    print(f"grant {args.name} revoked")
    return 0


def _register_grant(subparsers: Any) -> None:
    parser = subparsers.add_parser("grant", help="credentials for external agents (MCP)")
    parser.add_argument("--data-dir", default=None, help="gateway data dir (default as server)")
    commands = parser.add_subparsers(dest="grant_command", required=True)
    create = commands.add_parser("create", help="create a grant and print its token once")
    create.add_argument("name")
    create.add_argument("--policy", help="policy JSON file for this grant")
    create.set_defaults(func=_grant_create)
    commands.add_parser("list", help="list grants").set_defaults(func=_grant_list)
    revoke = commands.add_parser("revoke", help="revoke a grant; its token stops working")
    revoke.add_argument("name")
    revoke.set_defaults(func=_grant_revoke)


def _mock_model(args: argparse.Namespace) -> int:
    """Serve the local echo model and write a CODEX_HOME that points Codex at it."""
    import signal
    import threading

    from llmgw_jupyter.testing.codex_home import write_codex_home
    from llmgw_jupyter.testing.mock_responses import MockResponsesServer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with MockResponsesServer(port=args.port) as server:
        home = write_codex_home(Path(args.codex_home).expanduser().resolve(), server.base_url)
        print(f"CODEX_HOME={home}", flush=True)
        print(f"offline echo model at {server.base_url}: answers repeat the prompt", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def _register_mock(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mock-model", help="serve the offline echo model and write a CODEX_HOME for it"
    )
    parser.add_argument("--codex-home", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.set_defaults(func=_mock_model)


async def _demo(args: argparse.Namespace) -> int:
    from llmgw_jupyter.gateway import Gateway
    from llmgw_jupyter.providers.codex import codex_has_credentials
    from llmgw_jupyter.runtime import Runtime, RuntimeConfig
    from llmgw_jupyter.testing.codex_home import write_codex_home
    from llmgw_jupyter.testing.mock_responses import MockResponsesServer
    from llmgw_jupyter.tools import Caller

    with tempfile.TemporaryDirectory() as scratch, MockResponsesServer() as mock:
        codex_home = None
        if args.offline or not codex_has_credentials():
            codex_home = str(write_codex_home(Path(scratch) / "codex-home", mock.base_url))
            print(
                f"Codex has no credentials here: using the local echo model at {mock.base_url}"
                " (answers repeat the prompt)."
            )
        runtime = Runtime(
            RuntimeConfig(data_dir=args.data_dir or Path(scratch) / "data", codex_home=codex_home)
        )
        await runtime.start()
        gateway = Gateway(runtime)
        await gateway.start()
        owner = Caller.owner()

        async def show(message: str | None) -> None:
            print(f"  · {message}")

        try:
            first = await gateway.call(
                "codex_request",
                {"prompt": args.prompt, "working_dir": scratch},
                owner,
                progress=lambda _p, _t, message: show(message),
            )
            print(first.text if first.is_error else f"answer: {first.structured['final_message']}")
            if first.is_error:
                return 1
            session = first.structured["session_id"]
            fork = await gateway.call(
                "codex_fork_session",
                {"session_id": session, "prompt": "And now in one word?", "working_dir": scratch},
                owner,
            )
            job_id = fork.structured["job"]["id"]
            done = await runtime.wait_finished(job_id, 120)
            print(f"fork {done.session_id} of {session}: {done.status.value}: {done.final_message}")
        finally:
            await gateway.close()
            await runtime.close()
    return 0


def _register_demo(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run one Codex request and a fork, live")
    parser.add_argument("prompt", nargs="?", default="Say hello from llmgw-jupyter.")
    parser.add_argument("--offline", action="store_true", help="always use the echo model")
    parser.add_argument("--data-dir", default=None)
    parser.set_defaults(func=lambda a: asyncio.run(_demo(a)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmgw", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    policy_cli.register(subparsers)
    _register_grant(subparsers)
    _register_mock(subparsers)
    _register_demo(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except GatewayError as error:
        print(f"llmgw: {error.message}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"llmgw: {error}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())

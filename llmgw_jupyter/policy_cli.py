"""``llmgw policy check FILE`` and ``llmgw policy explain FILE TOOL --args JSON [--grant NAME]``.

Explain runs against a throwaway in-memory store, so it never consumes real rate-limit counters;
``--repeat N`` shows when a limit starts refusing.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from llmgw_jupyter.policy.compiled import Policy, load_policy_file
from llmgw_jupyter.policy.engine import Decision, PolicyEngine
from llmgw_jupyter.policy.model import PolicyValidationError
from llmgw_jupyter.store.db import Database
from llmgw_jupyter.store.policy import PolicyStore


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``policy`` command to an argparse subparsers object (handlers set ``func``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "policy", help="check a policy file or explain a decision"
    )
    commands = parser.add_subparsers(dest="policy_command", required=True)
    check = commands.add_parser("check", help="validate a policy file")
    check.add_argument("file")
    check.set_defaults(func=run_check)
    explain = commands.add_parser("explain", help="show the decision for one call")
    explain.add_argument("file")
    explain.add_argument("tool")
    explain.add_argument("--args", default="{}", help="the call's arguments as a JSON object")
    explain.add_argument("--grant", default=None, help="decide as this grant (default: owner)")
    explain.add_argument("--repeat", type=int, default=1, help="decide N calls in a row")
    explain.add_argument(
        "--used-tokens",
        type=int,
        default=0,
        help="budgets: tokens the caller's jobs already used in their windows",
    )
    explain.add_argument(
        "--used-usd",
        type=float,
        default=0.0,
        help="budgets: US dollars the caller's jobs already cost in their windows",
    )
    explain.set_defaults(func=run_explain)
    return parser


def _load(path: str, err: TextIO) -> Policy | None:
    try:
        return load_policy_file(path)
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=err)
    except PolicyValidationError as exc:
        for error in exc.errors:
            print(str(error), file=err)
    return None


def run_check(args: argparse.Namespace) -> int:
    """Exit 0 and print OK, or exit 1 and print ``pointer: rule`` for every error."""
    policy = _load(args.file, sys.stderr)
    if policy is None:
        return 1
    # The CLI knows the tools of the installed providers (configured ones need a server).
    from llmgw_jupyter.tools.registry import builtin_registry

    known = builtin_registry().names
    for name in policy.unknown_tools(known):
        print(
            f"warning: /tools/{name}: no such tool (known: {', '.join(known)})",
            file=sys.stderr,
        )
    print("OK")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    """Print the decision, the deciding rule (pointer and its JSON) and the reason."""
    out, err = sys.stdout, sys.stderr
    policy = _load(args.file, err)
    if policy is None:
        return 1
    try:
        call_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        print(f"--args: invalid JSON: {exc.msg}", file=err)
        return 1
    if not isinstance(call_args, dict):
        print("--args: must be a JSON object", file=err)
        return 1
    if args.repeat < 1:
        print("--repeat: must be at least 1", file=err)
        return 1
    if args.used_tokens < 0 or not args.used_usd >= 0:
        print("--used-tokens, --used-usd: must not be negative", file=err)
        return 1
    caller = f"grant:{args.grant}" if args.grant else "owner"
    from llmgw_jupyter.tools.registry import builtin_registry

    starts_job = args.tool in builtin_registry().job_starting
    db = Database(":memory:")
    try:
        store = PolicyStore(db)
        engine = PolicyEngine(store)
        if starts_job and (args.used_tokens or args.used_usd):
            # What the caller already used, charged to the budgets a job would be charged to.
            earlier = engine.decide(policy, args.tool, call_args, caller, starts_job=True)
            store.attach_budgets("earlier-jobs", earlier.budgets)
            store.charge_job("earlier-jobs", args.used_tokens, args.used_usd, final=True)
        decisions = [
            engine.decide(policy, args.tool, call_args, caller, starts_job=starts_job)
            for _ in range(args.repeat)
        ]
    finally:
        db.close()
    if args.repeat > 1:
        for number, decision in enumerate(decisions, start=1):
            print(f"call {number}: {decision.outcome} ({decision.rule})", file=out)
    _print_decision(policy, caller, args.tool, decisions[-1], out)
    return 0


def _print_decision(
    policy: Policy, caller: str, tool: str, decision: Decision, out: TextIO
) -> None:
    print(f"caller: {caller}", file=out)
    print(f"decision: {decision.outcome}", file=out)
    print(f"rule: {decision.rule or '<no policy>'}", file=out)
    print(f"rule text: {json.dumps(policy.at(decision.rule))}", file=out)
    print(f"reason: {decision.reason}", file=out)
    if decision.retry_after_seconds is not None:
        print(f"retry_after_seconds: {decision.retry_after_seconds:.3f}", file=out)
    if decision.approval_timeout_seconds is not None:
        print(f"approval_timeout_seconds: {decision.approval_timeout_seconds:g}", file=out)
    if decision.budgets:
        rule = policy.tools.get(tool)
        budgets = (*policy.all_budgets, *(rule.budgets if rule is not None else ()))
        print("charged to: " + "; ".join(b.describe() for b in budgets), file=out)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m llmgw_jupyter.policy_cli``), same as ``llmgw policy``."""
    parser = argparse.ArgumentParser(prog="llmgw")
    register(parser.add_subparsers(dest="command", required=True))
    namespace = parser.parse_args(argv)
    result: int = namespace.func(namespace)
    return result


if __name__ == "__main__":
    raise SystemExit(main())

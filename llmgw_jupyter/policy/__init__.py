"""Policy layer: documents, validation, decisions, hot reload. Pure Python (no Jupyter imports).

Typical use::

    engine = PolicyEngine(PolicyStore(db))
    source = PolicySource(path)            # raises on a bad file: fail closed
    decision = engine.decide(source.policy, "codex_request_async", args, "grant:ci")
    if decision.outcome == "deny": ...     # decision.denial_text(), decision.to_dict()
    engine.release(decision)               # when the call is refused later in the chain
"""

from llmgw_jupyter.policy.compiled import (
    ALLOW_ALL,
    Policy,
    allow_all_policy,
    load_policy,
    load_policy_file,
    parse_policy_text,
)
from llmgw_jupyter.policy.engine import DENIAL_PREFIX, Decision, PolicyEngine
from llmgw_jupyter.policy.loader import PolicySource
from llmgw_jupyter.policy.model import PolicyProblem, PolicyValidationError
from llmgw_jupyter.store.values import canonical_args_hash

__all__ = [
    "ALLOW_ALL",
    "DENIAL_PREFIX",
    "Decision",
    "Policy",
    "PolicyEngine",
    "PolicyProblem",
    "PolicySource",
    "PolicyValidationError",
    "allow_all_policy",
    "canonical_args_hash",
    "load_policy",
    "load_policy_file",
    "parse_policy_text",
]

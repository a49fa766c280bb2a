"""The gateway: one chokepoint for every tool call, and what it delegates to.

- ``chokepoint``: ``Gateway`` (call, list_tools, argument shape checks, the policy decision, the
  audit of each call, progress) and its lifecycle;
- ``grant_policies``: which policy governs each caller, cached, with the staleness check;
- ``approvals``: the approval broker (requests, decisions, expiry, held jobs);
- ``revocation``: revoked grants' in-flight calls, jobs, approvals and listeners;
- ``audit``: audit records, repeats collapsed into counts, values masked;
- ``result``: ``ToolResult``, what every adapter renders.
"""

from llmgw_jupyter.gateway.chokepoint import Gateway
from llmgw_jupyter.gateway.result import ToolResult
from llmgw_jupyter.policy import DENIAL_PREFIX

__all__ = ["DENIAL_PREFIX", "Gateway", "ToolResult"]

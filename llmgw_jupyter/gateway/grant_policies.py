"""Which policy governs each caller: the owner's file, or a grant's own file or stored policy.

Every call of a grant needs the grant's record and policy, so both are cached. The cache is
emptied on any grant write through this process's store (its ``grants_generation``) and when
another process (the ``llmgw grant`` CLI) has committed to the store, which SQLite's
``PRAGMA data_version`` tells. That check runs once per call: ``check_for_changes`` makes it and
lets the next lookup trust it, so the server's token check and the gateway share one.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from llmgw_jupyter.policy import Policy, PolicySource
from llmgw_jupyter.policy.compiled import load_policy
from llmgw_jupyter.store.grants import GrantRecord, GrantStore
from llmgw_jupyter.tools.context import Caller

log = logging.getLogger(__name__)

GRANT_CACHE_SIZE = 1024
CHECK_REUSE_SECONDS = 1.0
"""How old a ``check_for_changes`` made for a request may be when that request's call trusts it
(the time between authenticating a request and dispatching its call); older ones are redone."""

GrantsStamp = tuple[int, int]  # (SQLite data_version, this process's grants_generation)


class GrantPolicies:
    """Resolves and caches the policy of each caller."""

    def __init__(
        self,
        store: GrantStore,
        owner_policy: PolicySource,
        grant_policy_dir: Path | None,
    ) -> None:
        self.store = store
        self.owner_policy = owner_policy
        self.grant_policy_dir = grant_policy_dir
        self._sources: dict[str, PolicySource] = {}
        self._records: dict[str, GrantRecord | None] = {}
        self._policies: dict[str, tuple[GrantRecord, str, Policy | None]] = {}
        self._stamp: GrantsStamp | None = None
        self._generation = -1
        self._checked_at: float | None = None  # when check_for_changes last ran, not yet used

    # -- staleness ----------------------------------------------------------------------------
    def check_for_changes(self) -> GrantsStamp:
        """Ask SQLite once whether grants may have changed (``PRAGMA data_version``), drop the
        cached records if so, and return the stamp (it changes whenever they may have).

        The next grant lookup within ``CHECK_REUSE_SECONDS`` trusts this check instead of making
        its own: the server calls this when it authenticates a request (its token cache is
        valid while the stamp holds), and that request's call then needs no second check."""
        stamp = self._refresh()
        self._checked_at = time.monotonic()
        return stamp

    def _refresh(self) -> GrantsStamp:
        stamp = (self.store.db.data_version(), self.store.grants_generation)
        if stamp != self._stamp:
            self._stamp = stamp
            self._generation = stamp[1]
            self._records.clear()
        return stamp

    def _current(self) -> None:
        """Make the cache current: use a fresh ``check_for_changes`` once, else check now.
        Writes through this process's store are seen at once either way (their generation)."""
        checked, self._checked_at = self._checked_at, None
        if checked is not None and time.monotonic() - checked <= CHECK_REUSE_SECONDS:
            if self.store.grants_generation != self._generation:
                self._refresh()
            return
        self._refresh()

    def forget_records(self) -> None:
        """Drop every cached grant record (around this process's own grant writes)."""
        self._records.clear()

    def forget_policy(self, name: str) -> None:
        """Drop the compiled policy of a grant (it was revoked)."""
        self._policies.pop(name, None)

    # -- lookups ------------------------------------------------------------------------------
    def is_active(self, name: str, *, fresh: bool = False) -> bool:
        """Whether the grant exists and is not revoked; ``fresh`` asks SQLite whatever was
        checked before (to catch a revocation that happened while a call ran)."""
        if fresh:
            self._refresh()
        else:
            self._current()
        grant = self._record(name)
        return grant is not None and grant.active

    def policy_for(self, caller: Caller) -> Policy | None:
        """The owner's policy file, or the grant's own policy; no policy refuses everything."""
        if caller.is_owner:
            return self.owner_policy.policy
        self._current()
        return self._grant_policy(caller.name, self._record(caller.name))

    def for_call(self, caller: Caller) -> tuple[bool, Policy | None]:
        """One check for one call: whether the caller is an active grant, and its policy."""
        if caller.is_owner:
            return False, self.owner_policy.policy
        self._current()
        grant = self._record(caller.name)
        return grant is not None and grant.active, self._grant_policy(caller.name, grant)

    def _record(self, name: str) -> GrantRecord | None:
        """The grant's record from the cache (made current by the caller), else the store."""
        if name in self._records:
            return self._records[name]
        grant = self.store.get_grant(name)
        if len(self._records) >= GRANT_CACHE_SIZE:
            self._records.clear()
        self._records[name] = grant
        return grant

    def _grant_policy(self, name: str, grant: GrantRecord | None) -> Policy | None:
        if grant is None or not grant.active:
            return None
        from_file = self._grant_policy_file(name)
        if from_file is not None:
            return from_file if isinstance(from_file, Policy) else None
        if grant.policy is None:
            return None
        cached = self._policies.get(name)
        if cached is not None and cached[0] is grant:  # the same cached record: same policy
            return cached[2]
        text = json.dumps(grant.policy, sort_keys=True)
        if cached is not None and cached[1] == text:  # re-read, unchanged: the same object
            self._policies[name] = (grant, text, cached[2])
            return cached[2]
        try:
            policy: Policy | None = load_policy(grant.policy, f"grant {name}")
        except Exception:  # a stored policy that no longer validates fails closed
            log.exception("policy of grant %s does not validate; refusing its calls", name)
            policy = None
        self._policies[name] = (grant, text, policy)
        return policy

    def _grant_policy_file(self, name: str) -> Policy | bool | None:
        """``<grant_policy_dir>/<name>.json`` wins over the stored policy and is hot-reloaded.

        None: no such file (use the stored policy); False: the file never loaded (fail closed).
        A later bad edit keeps the last good policy in force, as for the owner's file.
        """
        if self.grant_policy_dir is None:
            return None
        source = self._sources.get(name)
        if source is None:
            path = self.grant_policy_dir / f"{name}.json"
            if not path.exists():
                return None
            try:
                source = PolicySource(path)
            except Exception:
                log.exception("policy file of grant %s does not load; refusing its calls", name)
                return False
            self._sources[name] = source
        source.check()
        return source.policy

"""Which coding-agent CLIs the gateway runs: installed providers and configured ones.

A provider is a class (see ``ProviderClass``) named by an import string ``"module:Class"``. The
installed ones come from the entry-point group ``llmgw_jupyter.providers`` (this package declares
``codex``); configuration adds others by name with a ``class`` and gives each its own
``ProviderSettings``. Adding a CLI is one module plus one of those two registrations.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib.metadata import entry_points

from llmgw_jupyter.providers.base import (
    Provider,
    ProviderClass,
    ProviderConfigError,
    ProviderSettings,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "build_providers",
    "installed_providers",
    "load_provider_class",
]

ENTRY_POINT_GROUP = "llmgw_jupyter.providers"
# The package's own providers, also when it runs from a source tree without installed metadata.
BUILTIN = {"codex": "llmgw_jupyter.providers.codex:CodexProvider"}
# A provider name becomes a tool prefix, a job column and a file name: keep it plain.
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_REF_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@lru_cache(maxsize=1)
def installed_providers() -> dict[str, str]:
    """Name -> import string of every installed provider (entry points win over the fallback)."""
    found = dict(BUILTIN)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found[point.name] = point.value
    return found


def load_provider_class(name: str, ref: str) -> ProviderClass:
    """Import ``"module:Class"`` for provider ``name``; every failure names the provider."""
    if not _REF_RE.match(ref):
        raise ProviderConfigError(name, "class", f"{ref!r} is not a 'module:Class' import string")
    module_name, _, attribute = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ProviderConfigError(
            name, "class", f"cannot import {module_name!r}: {error}"
        ) from None
    cls = getattr(module, attribute, None)
    if cls is None:
        raise ProviderConfigError(name, "class", f"{module_name!r} has no {attribute!r}")
    missing = [
        member for member in ("name", "tool_spec", "from_settings") if not hasattr(cls, member)
    ]
    if missing:
        raise ProviderConfigError(
            name, "class", f"{ref} is not a provider class (it lacks {', '.join(missing)})"
        )
    if cls.name != name:
        raise ProviderConfigError(
            name, "class", f"{ref} is the provider {cls.name!r}; register it under that name"
        )
    provider_class: ProviderClass = cls
    return provider_class


def build_providers(
    settings: Mapping[str, ProviderSettings] | None = None,
) -> dict[str, Provider]:
    """Every installed provider, then every configured one, each built from its settings."""
    settings = dict(settings or {})
    installed = installed_providers()
    providers: dict[str, Provider] = {}
    for name in [*installed, *(n for n in settings if n not in installed)]:
        if not NAME_RE.match(name):
            raise ProviderConfigError(
                name, "name", "must be lowercase letters, digits and _ (at most 32), a letter first"
            )
        own = settings.get(name, ProviderSettings())
        if not own.enabled:
            continue
        ref = own.class_ref or installed.get(name)
        if ref is None:
            raise ProviderConfigError(
                name,
                "class",
                "no 'class' given and no installed provider of that name (installed: "
                f"{', '.join(sorted(installed))}); give 'module:Class'",
            )
        providers[name] = load_provider_class(name, ref).from_settings(own)
    return providers

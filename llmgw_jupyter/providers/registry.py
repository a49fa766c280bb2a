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
from pathlib import Path
from typing import Any

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
    "provider_settings",
    "settings_from_config",
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


_ENTRY_KEYS = ("class", "path", "home", "options", "enabled")


def provider_settings(name: str, entry: Mapping[str, Any]) -> ProviderSettings:
    """One ``providers`` entry as settings; its class (given or installed) is imported here."""
    for key in entry:
        if key not in _ENTRY_KEYS:
            raise ProviderConfigError(
                name, key, f"unknown setting (known: {', '.join(_ENTRY_KEYS)})"
            )
    for key in ("class", "path", "home"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise ProviderConfigError(name, key, "must be a string")
    options = entry.get("options") or {}
    if not isinstance(options, dict):
        raise ProviderConfigError(name, "options", "must be a dict")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ProviderConfigError(name, "enabled", "must be true or false")
    if not enabled:
        return ProviderSettings(enabled=False)
    ref = entry.get("class") or installed_providers().get(name)
    if ref is None:
        raise ProviderConfigError(
            name, "class", "needed: no installed provider has that name ('module:Class')"
        )
    load_provider_class(name, ref)
    home = entry.get("home")
    # Jobs run in their own working dirs: a relative home would mean something else there.
    return ProviderSettings(
        path=entry.get("path") or None,
        home=str(Path(home).expanduser().resolve()) if home else None,
        options=dict(options),
        class_ref=entry.get("class") or None,
        enabled=True,
    )


def settings_from_config(entries: Mapping[str, Any]) -> dict[str, ProviderSettings]:
    """``c.LLMGatewayApp.providers`` (or the kernel's ``LLMGW_PROVIDERS`` JSON) as settings."""
    if not isinstance(entries, Mapping):
        raise ProviderConfigError("providers", "providers", "must be an object of name -> entry")
    settings = {}
    for name, entry in entries.items():
        if not isinstance(entry, Mapping):
            raise ProviderConfigError(str(name), "entry", "must be an object")
        settings[str(name)] = provider_settings(str(name), entry)
    return settings

"""host.models(): the models plugins offer, merged and de-duplicated as the Go host does."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..envelope import ci_get
from ..errors import DECLINE_CODES, PluginError
from .models import ModelEntry
from .source import Participant, PluginSource

log = logging.getLogger(__name__)


def _scope(p: Participant) -> str:
    if p.capabilities.get("executor") is not True:
        return "both"
    scope = str(p.capabilities.get("executor_model_scope") or "").strip().lower()
    return scope if scope in ("static", "oauth", "both") else "both"


def _ordered(groups: Iterable[Sequence[Participant]]) -> list[Participant]:
    """Plugins of several methods, once each, in dispatch order (priority, then ID)."""
    seen: dict[str, Participant] = {}
    for group in groups:
        for p in group:
            if p.native is None:
                seen.setdefault(p.name, p)
    return sorted(seen.values(), key=lambda p: (-p.priority, p.name))


def _models(result: Any) -> tuple[str, list[Mapping[str, Any]]]:
    """(provider, models with a non-empty ID) of a model.* answer; IDs trimmed."""
    if not isinstance(result, Mapping):
        return "", []
    provider = str(ci_get(result, "provider", "") or "").strip().lower()
    out: list[Mapping[str, Any]] = []
    for item in ci_get(result, "models", None) or ():
        if not isinstance(item, Mapping):
            continue
        mid = str(ci_get(item, "id", "") or "").strip()
        if mid:
            out.append({**item, "ID": mid})
    return provider, out


@dataclass(frozen=True)
class Catalog:
    """Every offered model and, for each model ID, the executor plugins that serve it."""

    entries: tuple[ModelEntry, ...] = ()
    owners: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def executors_for(self, model: str) -> tuple[str, ...]:
        return self.owners.get(model.strip(), ())


def _call(source: PluginSource, p: Participant, method: str, request: Mapping[str, Any]) -> Any:
    try:
        return source.call(p.name, method, request)
    except PluginError as exc:
        if exc.code not in DECLINE_CODES:
            log.warning("%s (models of this plugin left out)", exc)
        return None


def _identifier(source: PluginSource, p: Participant) -> str:
    result = _call(source, p, "executor.identifier", {})
    ident = ci_get(result, "identifier", "") if isinstance(result, Mapping) else ""
    return str(ident or "").strip().lower()


def build(source: PluginSource, auths: Sequence[Mapping[str, Any]] = ()) -> Catalog:
    """Ask every model provider and registrar (and model.for_auth per auth), then merge.

    A plugin with model_provider is asked model.static, one with only model_registrar
    model.register; an executor whose executor_model_scope is "oauth" offers no static
    models. Within a provider the first plugin (dispatch order) to list an ID keeps it.
    An executor plugin serves the IDs it lists itself (the first to list an ID claims it);
    IDs listed by a plugin without an executor are served by the executors whose provider
    (executor.identifier) matches.
    """
    executors = [p for p in source.participants("executor.execute") if p.native is None]
    listers = _ordered([source.participants("model.static"), source.participants("model.register")])
    entries: list[ModelEntry] = []
    seen: set[tuple[str, str]] = set()
    own: dict[str, list[str]] = {}
    provider_of: dict[str, str] = {}
    by_provider: dict[str, list[str]] = {}
    for p in listers:
        if _scope(p) == "oauth":
            continue
        static = p.capabilities.get("model_provider") is True
        method = "model.static" if static else "model.register"
        provider, models = _models(_call(source, p, method, {}))
        if not provider or not models:
            continue
        provider_of[p.name] = provider
        for info in models:
            mid = info["ID"]
            own.setdefault(p.name, []).append(mid)
            if (provider, mid) in seen:
                continue
            seen.add((provider, mid))
            by_provider.setdefault(provider, []).append(mid)
            entries.append(ModelEntry(mid, provider, p.name, method, info=MappingProxyType(info)))
    entries.extend(_for_auth(source, listers, provider_of, auths, seen))
    owners: dict[str, list[str]] = {}
    for ex in executors:
        for mid in own.get(ex.name, ()):
            owners.setdefault(mid, [])
            if not owners[mid]:
                owners[mid].append(ex.name)
    for ex in executors:
        if own.get(ex.name):
            continue
        provider = provider_of.get(ex.name) or _identifier(source, ex)
        for mid in by_provider.get(provider, ()):
            if ex.name not in owners.setdefault(mid, []):
                owners[mid].append(ex.name)
    final = tuple(
        ModelEntry(
            e.id,
            e.provider,
            e.plugin_id,
            e.source,
            (owners.get(e.id) or [""])[0],
            e.info,
        )
        for e in entries
    )
    return Catalog(final, {k: tuple(v) for k, v in owners.items()})


def _auth_provider(source: PluginSource, p: Participant, provider_of: Mapping[str, str]) -> str:
    """The provider a plugin's model.for_auth serves: its auth.identifier when it is an
    auth provider, else the provider of its static models, else its executor.identifier."""
    if p.capabilities.get("auth_provider") is True:
        result = _call(source, p, "auth.identifier", {})
        ident = ci_get(result, "identifier", "") if isinstance(result, Mapping) else ""
        return str(ident or "").strip().lower()
    if p.name in provider_of:
        return provider_of[p.name]
    if p.capabilities.get("executor") is True:
        return _identifier(source, p)
    return ""


def _for_auth(
    source: PluginSource,
    listers: Sequence[Participant],
    provider_of: Mapping[str, str],
    auths: Sequence[Mapping[str, Any]],
    seen: set[tuple[str, str]],
) -> list[ModelEntry]:
    """model.for_auth per credential: the first provider plugin of the auth's provider answers."""
    out: list[ModelEntry] = []
    candidates = [
        p for p in listers if p.capabilities.get("model_provider") is True and _scope(p) != "static"
    ]
    providers: dict[str, str] = {}
    for auth in auths:
        provider = str(ci_get(auth, "provider", "") or "").strip().lower()
        if not provider:
            continue
        for p in candidates:
            if p.name not in providers:
                providers[p.name] = _auth_provider(source, p, provider_of)
            if providers[p.name] != provider:
                continue
            request = {
                "AuthID": str(ci_get(auth, "id", "") or ""),
                "AuthProvider": provider,
                "Metadata": ci_get(auth, "metadata", None) or {},
                "Attributes": ci_get(auth, "attributes", None) or {},
            }
            answered, models = _models(_call(source, p, "model.for_auth", request))
            if answered and answered != provider:
                continue
            for info in models:
                key = (provider, info["ID"])
                if key not in seen:
                    seen.add(key)
                    out.append(
                        ModelEntry(
                            info["ID"],
                            provider,
                            p.name,
                            "model.for_auth",
                            info=MappingProxyType(info),
                        )
                    )
            break
    return out

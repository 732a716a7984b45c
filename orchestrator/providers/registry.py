"""The provider registry: every `provider:` prefix is an entry point of the `orchestrator.providers` group.

A package adds a provider by declaring, in its own `pyproject.toml`,

    [project.entry-points."orchestrator.providers"]
    acme = "acme_orchestrator:provider"      # a Provider, a Provider class, or a function returning one

and `acme:some-model` then resolves through it. The built-ins (`local`, `openai`, `anthropic`, ...) are
declared the same way in this distribution's `pyproject.toml`; nothing is hard-coded here.

Listing the registered prefixes reads installed metadata only. A provider's module is imported the first
time a name with its prefix is resolved, so llama-cpp loads only for `local:`, and a plugin that fails to
import breaks only the names that use it, with an error naming its package.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator._version import DIST_NAME
from orchestrator.errors import UnknownModelError

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from orchestrator.config import ModelConfig, Settings
    from orchestrator.cost.pricing import Prices, PriceTable
    from orchestrator.profiles import ModelProfile

__all__ = ["GROUP", "ModelRequest", "Provider", "get_provider", "iter_providers", "provider_names"]

GROUP = "orchestrator.providers"
_log = logging.getLogger("orchestrator.providers")


@dataclass(frozen=True)
class ModelRequest:
    """A model name split at its prefix, with what the slot (or `orch ask`) says about it."""

    name: str  # "acme:small-1"
    provider: str  # "acme": the prefix it is registered under
    model: str  # "small-1"
    table: PriceTable  # the price table in force (the user's file over the shipped snapshot)
    price_as: str | None = None  # price it as this price-table key
    prices: Prices | None = None  # the slot's own prices, over any table
    base_url: str | None = None
    api_key_env: str | None = None
    max_concurrency: int = 16


class Provider(ABC):
    """What one prefix knows: how its model names become profiles, and its profiles chat models.

    Example:
        >>> class Echo(Provider):  # doctest: +SKIP
        ...     def profile(self, request):
        ...         return ModelProfile(request.name, request.provider, request.model, Capabilities(),
        ...                             8192, Prices(1e-6, 2e-6, source="echo price list"))
        ...     def chat_model(self, profile, config, settings, *, slot, temperature):
        ...         return EchoChatModel(model=profile.model)
    """

    @abstractmethod
    def profile(self, request: ModelRequest) -> ModelProfile:
        """The model's profile: capabilities, context window, prices (None when unknown) and endpoint.

        An unknown model raises `UnknownModelError` (with "did you mean"), or resolves with cost null.
        """

    @abstractmethod
    def chat_model(
        self,
        profile: ModelProfile,
        config: ModelConfig,
        settings: Settings,
        *,
        slot: str,
        temperature: float | None,
    ) -> BaseChatModel:
        """A langchain-core chat model for a profile this provider made, with the slot's endpoint settings.

        Its replies carry `usage_metadata`: the orchestrator prices and traces every call from it.
        """

    def known_models(self, table: PriceTable) -> list[str]:
        """Model names (without the prefix) this provider serves from the price table, for `orch models`."""
        return []


@dataclass(frozen=True)
class _Registration:
    name: str
    value: str
    package: str  # "dist-name version": who declared it

    def load(self) -> Provider:
        ep = importlib.metadata.EntryPoint(self.name, self.value, GROUP)
        target = ep.load()
        if isinstance(target, type) or (callable(target) and not isinstance(target, Provider)):
            target = target()
        if not isinstance(target, Provider):
            raise TypeError(f"it gave {type(target).__name__}, not an orchestrator.providers.Provider")
        return target


_lock = threading.Lock()
_listed: tuple[tuple[str, ...], dict[str, list[_Registration]]] | None = None
_loaded: dict[_Registration, Provider] = {}


def _registrations() -> dict[str, list[_Registration]]:
    """Prefix -> its declarations, from installed metadata (read again whenever sys.path changes)."""
    global _listed
    key = tuple(sys.path)
    with _lock:
        if _listed is not None and _listed[0] == key:
            return _listed[1]
        found: dict[str, list[_Registration]] = {}
        for ep in importlib.metadata.entry_points(group=GROUP):
            dist = ep.dist
            package = f"{dist.name} {dist.version}" if dist is not None else "an unknown package"
            reg = _Registration(ep.name, ep.value, package)
            if reg not in found.setdefault(ep.name, []):
                found[ep.name].append(reg)
        _listed = (key, found)
        return found


def provider_names() -> list[str]:
    """The registered prefixes, sorted; no provider module is imported."""
    return sorted(_registrations())


def get_provider(prefix: str, model_name: str | None = None) -> Provider:
    """The provider registered as `prefix`, imported on first use.

    Raises UnknownModelError for a prefix nobody registered (listing those that are), for a prefix two
    packages claim, and for a plugin that fails to load (naming its package).
    """
    regs = _registrations().get(prefix)
    where = f" in model {model_name!r}" if model_name else ""
    if not regs:
        raise UnknownModelError(f"unknown provider {prefix!r}{where}" + _registered_hint(prefix))
    if len(regs) > 1:
        claims = "; ".join(f"{r.package} ({r.value})" for r in regs)
        raise UnknownModelError(
            f"provider {prefix!r}{where} is registered by more than one package: {claims}. "
            "Uninstall one of them"
        )
    (reg,) = regs
    with _lock:
        provider = _loaded.get(reg)
    if provider is not None:
        return provider
    try:
        provider = reg.load()
    except Exception as exc:
        raise UnknownModelError(
            f"provider {prefix!r}{where} comes from the package {reg.package} ({prefix} = {reg.value!r} in "
            f"entry-point group {GROUP!r}), which failed to load: {type(exc).__name__}: {exc}. "
            f"Reinstall or fix that package, or uninstall it; the other providers are unaffected"
        ) from exc
    with _lock:
        return _loaded.setdefault(reg, provider)


def iter_providers() -> Iterator[tuple[str, Provider]]:
    """Every provider that loads, by prefix; a broken plugin is logged and skipped (for listings only)."""
    for name in provider_names():
        try:
            yield name, get_provider(name)
        except UnknownModelError as exc:
            _log.warning("%s", exc)


def _registered_hint(prefix: str) -> str:
    names = provider_names()
    if not names:
        return (
            f"; no provider is registered in the entry-point group {GROUP!r}: is {DIST_NAME} installed? "
            "(in a checkout: pip install -e .)"
        )
    close = difflib.get_close_matches(prefix, names, n=3, cutoff=0.5)
    hint = "; did you mean " + " or ".join(repr(c) for c in close) + "?" if close else "."
    return hint + " Registered providers: " + ", ".join(repr(n) for n in names)

"""Binding a slot: `resolve_profile` is the one function that turns a `"provider:model"` name into a profile.

The prefix names a provider of the registry (`orchestrator.providers.registry`: entry points, built-ins
included); the provider makes the profile. `bind_slot` resolves a slot's model and its fallback chain.
"""

from __future__ import annotations

import dataclasses

from orchestrator.config import ModelConfig, SlotConfig
from orchestrator.cost.pricing import Prices, PriceTable, shipped_table
from orchestrator.errors import ManifestError, UnknownModelError
from orchestrator.profiles import CAPABILITY_NAMES, ModelProfile, SlotBinding, capability_error
from orchestrator.providers.registry import ModelRequest, get_provider, iter_providers

__all__ = ["bind_slot", "catalog_names", "resolve_profile"]


def resolve_profile(
    name: str,
    *,
    price_as: str | None = None,
    prices: Prices | None = None,
    table: PriceTable | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    max_concurrency: int = 16,
) -> ModelProfile:
    """Turn `"provider:model"` into a profile; unknown providers and local models fail with "did you mean".

    An unknown model under a known API provider resolves, with a warning and cost null (unless `price_as`
    or `prices` price it), so a model newer than the price snapshot can be tried.

    Example:
        >>> resolve_profile("local:qwen2.5-0.5b").prices.input
        0.0
    """
    provider, sep, model = name.partition(":")
    if not sep or not model:
        raise UnknownModelError(
            f"model name {name!r} is not of the form 'provider:model' (e.g. 'local:qwen2.5-0.5b', "
            "'openai:gpt-4o-mini')"
        )
    request = ModelRequest(
        name,
        provider,
        model,
        table or shipped_table(),
        price_as=price_as,
        prices=prices,
        base_url=base_url,
        api_key_env=api_key_env,
        max_concurrency=max_concurrency,
    )
    return get_provider(provider, name).profile(request)


def _profile(slot: str, config: ModelConfig, table: PriceTable | None) -> ModelProfile:
    override = None
    if config.prices is not None:
        p = config.prices
        override = Prices(
            p.input, p.output, p.cache_read, p.cache_write, p.cache_write_1h, source=f"slot {slot!r} prices"
        )
    try:
        profile = resolve_profile(
            config.model,
            price_as=config.price_as,
            prices=override,
            table=table,
            base_url=config.base_url,
            api_key_env=config.api_key_env,
            max_concurrency=config.max_concurrency,
        )
    except UnknownModelError as exc:
        raise UnknownModelError(f"slot {slot!r}: {exc}") from None
    if config.context_window is not None:
        profile = dataclasses.replace(profile, context_window=config.context_window)
    if config.capabilities:
        unknown = sorted(set(config.capabilities) - set(CAPABILITY_NAMES))
        if unknown:  # the manifest's validation catches this first; a config built another way lands here
            raise ManifestError(f"slot {slot!r}: {capability_error(unknown[0])}")
        caps = dataclasses.replace(profile.capabilities, **config.capabilities)
        profile = dataclasses.replace(profile, capabilities=caps)
    if config.tool_limits is not None:
        given = config.tool_limits.model_dump(exclude_unset=True)
        profile = dataclasses.replace(profile, tool_limits=dataclasses.replace(profile.tool_limits, **given))
    return profile


def bind_slot(slot: str, config: SlotConfig, table: PriceTable | None = None) -> SlotBinding:
    """Resolve one `[tool.orchestrator.slots]` entry, with its fallback chain."""
    fallbacks = []
    for item in config.fallback:
        member = ModelConfig(model=item) if isinstance(item, str) else item
        fallbacks.append((_profile(slot, member, table), member))
    return SlotBinding(
        slot, _profile(slot, config, table), config.role, config.temperature, config, tuple(fallbacks)
    )


def catalog_names(table: PriceTable, provider: str | None = None) -> list[str]:
    """`provider:model` names for every chat model of the price table that a registered provider serves."""
    return [
        f"{name}:{model}"
        for name, found in iter_providers()
        if provider is None or name == provider
        for model in found.known_models(table)
    ]

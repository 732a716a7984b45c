"""The stable: model names, profiles (capabilities, context, prices) and slot bindings.

A model is named `"provider:model"`; `resolve_profile` is the one function that turns a name into a profile.
The role (racehorse / workhorse) belongs to the slot binding, never to the profile.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import Role, SlotConfig
from orchestrator.errors import UnknownModelError, did_you_mean
from orchestrator.modelfiles import LOCAL_MODELS
from orchestrator.pricing import ZERO, Prices, PriceTable, shipped_table

__all__ = ["Capabilities", "ModelProfile", "SlotBinding", "bind_slot", "resolve_profile"]


@dataclass(frozen=True)
class Capabilities:
    """What a model's endpoint can do; decisions and structured output are chosen from these."""

    tool_calling: bool = False
    json_schema: bool = False
    grammar: bool = False
    prefill: bool = False
    streaming_usage: bool = False


@dataclass(frozen=True)
class ModelProfile:
    """Everything the orchestrator knows about one model."""

    name: str
    provider: str
    model: str
    capabilities: Capabilities
    context_window: int | None
    prices: Prices | None
    file: Path | None = None  # a GGUF path for `local:` models given by path

    @property
    def price_source(self) -> str:
        """Where the price came from, or "unknown"."""
        return self.prices.source if self.prices else "unknown (cost recorded as null)"


@dataclass(frozen=True)
class _Provider:
    table_prefix: str
    capabilities: Capabilities
    default_base_url: str | None = None
    aliases: tuple[str, ...] = field(default=())


_API = Capabilities(tool_calling=True, json_schema=True, streaming_usage=True)
_LOCAL = Capabilities(grammar=True, json_schema=True, prefill=True)

PROVIDERS: dict[str, _Provider] = {
    "local": _Provider("", _LOCAL),
    "openai": _Provider("", _API, "https://api.openai.com/v1"),
    "anthropic": _Provider(
        "", Capabilities(tool_calling=True, prefill=True, streaming_usage=True), "https://api.anthropic.com"
    ),
    "openai-compat": _Provider("", _API),
    "groq": _Provider("groq/", _API, "https://api.groq.com/openai/v1"),
    "together": _Provider("together_ai/", _API, "https://api.together.xyz/v1"),
    "mistral": _Provider("mistral/", _API, "https://api.mistral.ai/v1"),
    "ollama": _Provider("ollama/", _API, "http://127.0.0.1:11434/v1"),
    "vllm": _Provider("", _API, "http://127.0.0.1:8000/v1"),
    # any LangChain chat model object: "python:module:attr" (priced only by the slot's prices / price_as)
    "python": _Provider("", Capabilities()),
}


def resolve_profile(
    name: str,
    *,
    price_as: str | None = None,
    prices: Prices | None = None,
    table: PriceTable | None = None,
) -> ModelProfile:
    """Turn `"provider:model"` into a profile; unknown providers and local models fail with "did you mean".

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
    if provider not in PROVIDERS:
        raise UnknownModelError(
            f"unknown provider {provider!r} in model {name!r}" + did_you_mean(provider, PROVIDERS)
        )
    spec = PROVIDERS[provider]
    table = table or shipped_table()
    if provider == "local":
        return _local_profile(name, model, prices)
    if provider == "python":
        found = prices or (table.lookup(price_as) if price_as else None)
        return ModelProfile(name, provider, model, spec.capabilities, None, found)
    key = spec.table_prefix + model
    found = prices or table.lookup(price_as or key)
    if price_as and found is None:
        raise UnknownModelError(
            f"price_as={price_as!r} is not in the price table" + did_you_mean(price_as, table.keys())
        )
    if table.lookup(key) is None and prices is None and price_as is None:
        warnings.warn(
            f"model {model!r} is not in the price table for provider {provider!r}; it runs with cost null. "
            "Set price_as= or prices= on its slot to price it"
            + did_you_mean(key, [k for k in table.keys() if k.startswith(spec.table_prefix)]),  # noqa: SIM118
            UnknownModelWarning,
            stacklevel=2,
        )
    return ModelProfile(name, provider, model, spec.capabilities, table.context_window(key), found)


def _local_profile(name: str, model: str, prices: Prices | None) -> ModelProfile:
    if model.endswith(".gguf"):
        path = Path(model).expanduser()
        return ModelProfile(name, "local", model, _LOCAL, None, prices or ZERO, file=path)
    if model not in LOCAL_MODELS:
        raise UnknownModelError(
            f"unknown model {model!r} for provider 'local'"
            + did_you_mean(model, LOCAL_MODELS)
            + " (or give a path ending in .gguf)"
        )
    return ModelProfile(name, "local", model, _LOCAL, 32768, prices or ZERO)


class UnknownModelWarning(UserWarning):
    """A model the price table does not know: it runs, with cost null."""


@dataclass(frozen=True)
class SlotBinding:
    """A slot (controller, extract, classify, ...) bound to a model in a role."""

    slot: str
    profile: ModelProfile
    role: Role
    temperature: float = 0.0


def bind_slot(slot: str, config: SlotConfig) -> SlotBinding:
    """Resolve one `[tool.orchestrator.slots]` entry."""
    override = None
    if config.prices is not None:
        p = config.prices
        override = Prices(p.input, p.output, p.cache_read, p.cache_write, source=f"slot {slot!r} prices")
    try:
        profile = resolve_profile(config.model, price_as=config.price_as, prices=override)
    except UnknownModelError as exc:
        raise UnknownModelError(f"slot {slot!r}: {exc}") from None
    return SlotBinding(slot, profile, config.role, config.temperature)

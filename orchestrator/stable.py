"""The stable: model names, profiles (capabilities, context, prices) and slot bindings.

A model is named `"provider:model"`; `resolve_profile` is the one function that turns a name into a profile.
The role (racehorse / workhorse) belongs to the slot binding, never to the profile.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config import ModelConfig, Role, SlotConfig
from orchestrator.errors import UnknownModelError, did_you_mean
from orchestrator.modelfiles import LOCAL_MODELS
from orchestrator.pricing import ZERO, Prices, PriceTable, shipped_table

__all__ = [
    "PROVIDERS",
    "Capabilities",
    "ModelProfile",
    "RateLimits",
    "SlotBinding",
    "bind_slot",
    "resolve_profile",
]


@dataclass(frozen=True)
class Capabilities:
    """What a model's endpoint can do; decisions and structured output are chosen from these."""

    tool_calling: bool = False
    json_schema: bool = False
    grammar: bool = False
    prefill: bool = False
    streaming_usage: bool = False
    prompt_caching: bool = False


@dataclass(frozen=True)
class RateLimits:
    """Known limits: requests and tokens per minute (from the price table), concurrent requests (config)."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int = 16


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
    protocol: str | None = None  # "openai" | "anthropic" for API models
    base_url: str | None = None
    api_key_env: str | None = None
    key_required: bool = False  # the provider's public endpoint: a missing key is an error
    rate_limits: RateLimits = field(default_factory=RateLimits)

    @property
    def price_source(self) -> str:
        """Where the price came from, or "unknown"."""
        return self.prices.source if self.prices else "unknown (cost recorded as null)"


@dataclass(frozen=True)
class _Provider:
    table_prefix: str
    capabilities: Capabilities
    default_base_url: str | None = None
    protocol: str | None = None
    api_key_env: str | None = None


_API = Capabilities(tool_calling=True, json_schema=True, streaming_usage=True)
_LOCAL = Capabilities(grammar=True, json_schema=True, prefill=True)
_SELF_HOSTED = Capabilities(tool_calling=True, json_schema=True, streaming_usage=True)

PROVIDERS: dict[str, _Provider] = {
    "local": _Provider("", _LOCAL),
    "openai": _Provider("", _API, "https://api.openai.com/v1", "openai", "OPENAI_API_KEY"),
    "anthropic": _Provider(
        "",
        Capabilities(tool_calling=True, prefill=True, streaming_usage=True, prompt_caching=True),
        "https://api.anthropic.com",
        "anthropic",
        "ANTHROPIC_API_KEY",
    ),
    "openai-compat": _Provider("", _SELF_HOSTED, None, "openai"),
    "groq": _Provider("groq/", _API, "https://api.groq.com/openai/v1", "openai", "GROQ_API_KEY"),
    "together": _Provider("together_ai/", _API, "https://api.together.xyz/v1", "openai", "TOGETHER_API_KEY"),
    "mistral": _Provider("mistral/", _API, "https://api.mistral.ai/v1", "openai", "MISTRAL_API_KEY"),
    "ollama": _Provider("ollama/", _SELF_HOSTED, "http://127.0.0.1:11434/v1", "openai"),
    "vllm": _Provider("", _SELF_HOSTED, "http://127.0.0.1:8000/v1", "openai"),
    # any LangChain chat model object: "python:module:attr" (priced only by the slot's prices / price_as)
    "python": _Provider("", Capabilities()),
}


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
    url = base_url or spec.default_base_url
    if url is None:
        raise UnknownModelError(
            f"model {name!r}: provider {provider!r} needs a base URL; set base_url on the slot "
            "(e.g. 'http://127.0.0.1:8080/v1' for llama.cpp's server) or pass --base-url"
        )
    key = spec.table_prefix + model
    found = prices or table.lookup(price_as or key)
    if price_as and found is None and prices is None:
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
    entry = table.entry(price_as or key) or table.entry(key)
    return ModelProfile(
        name,
        provider,
        model,
        _capabilities(spec.capabilities, entry),
        table.context_window(key) or table.context_window(price_as or key),
        found,
        protocol=spec.protocol,
        base_url=url,
        api_key_env=api_key_env or spec.api_key_env,
        key_required=spec.default_base_url is not None
        and url == spec.default_base_url
        and bool(spec.api_key_env),
        rate_limits=RateLimits(_int(entry.get("rpm")), _int(entry.get("tpm")), max_concurrency),
    )


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _capabilities(default: Capabilities, entry: dict[str, Any]) -> Capabilities:
    """The provider's defaults, refined by what the price table says of this model."""
    if not entry:
        return default

    def flag(key: str, fallback: bool) -> bool:
        value = entry.get(key)
        return bool(value) if isinstance(value, bool) else fallback

    return Capabilities(
        tool_calling=flag("supports_function_calling", default.tool_calling),
        json_schema=flag("supports_response_schema", default.json_schema),
        grammar=default.grammar,
        prefill=flag("supports_assistant_prefill", default.prefill),
        streaming_usage=default.streaming_usage,
        prompt_caching=flag("supports_prompt_caching", default.prompt_caching),
    )


LOCAL_CONTEXT = 4096  # the KV cache allocated for a local model, unless its slot sets context_window


def _local_profile(name: str, model: str, prices: Prices | None) -> ModelProfile:
    if model.endswith(".gguf"):
        path = Path(model).expanduser()
        return ModelProfile(name, "local", model, _LOCAL, LOCAL_CONTEXT, prices or ZERO, file=path)
    if model not in LOCAL_MODELS:
        raise UnknownModelError(
            f"unknown model {model!r} for provider 'local'"
            + did_you_mean(model, LOCAL_MODELS)
            + " (or give a path ending in .gguf)"
        )
    return ModelProfile(name, "local", model, _LOCAL, LOCAL_CONTEXT, prices or ZERO)


class UnknownModelWarning(UserWarning):
    """A model the price table does not know: it runs, with cost null."""


@dataclass(frozen=True)
class SlotBinding:
    """A slot (controller, extract, classify, ...) bound to a model in a role, with its fallback chain."""

    slot: str
    profile: ModelProfile
    role: Role
    temperature: float = 0.0
    config: SlotConfig | None = None
    fallbacks: tuple[tuple[ModelProfile, ModelConfig], ...] = ()

    @property
    def chain(self) -> tuple[ModelProfile, ...]:
        """The slot's model, then its fallbacks, in the order they are tried."""
        return (self.profile, *(p for p, _ in self.fallbacks))

    def profile_of(self, name: str) -> ModelProfile:
        """The chain member called `name` (the slot's own profile when unknown)."""
        return next((p for p in self.chain if p.name == name), self.profile)


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
    """`provider:model` names for every chat model of the price table that a known provider serves."""
    by_prefix = {spec.table_prefix: name for name, spec in PROVIDERS.items() if spec.table_prefix}
    names: list[str] = []
    for key in table.keys():  # noqa: SIM118 (a PriceTable, not a dict)
        entry = table.entry(key)
        if entry.get("mode") != "chat":
            continue
        owner = entry.get("litellm_provider")
        prefix, sep, rest = key.partition("/")
        if sep and prefix + "/" in by_prefix:
            names.append(f"{by_prefix[prefix + '/']}:{rest}")
        elif not sep and owner in ("openai", "anthropic"):
            names.append(f"{owner}:{key}")
    return [n for n in names if provider is None or n.startswith(provider + ":")]
